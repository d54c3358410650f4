"""The image's HEALTHCHECK: exit 0 when the daemon's /healthz answers 200, else 1 with why.

Only the standard library, so it runs in the image as it is; the reason printed (the body of a
503, or why nothing answered) is what `docker inspect` shows under State.Health.
"""

import sys
import urllib.error
import urllib.request


def main(url: str) -> int:
    """Prints the health endpoint's answer; 0 when it says healthy."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            print(answer.read().decode(errors="replace").strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode(errors='replace').strip()}")
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc} (is metrics.listen set to 0.0.0.0:9464 in the config?)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
