"""``python -m mimo_watchd.emulator``: the emulator as a stand-alone process."""

from mimo_watchd.emulator.cli import main

raise SystemExit(main())
