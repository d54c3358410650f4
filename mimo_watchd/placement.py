"""Where a finished or failed file goes, and getting it there without overwriting anything.

**Names.** A recording ``call.wav`` is offered these names, in order (``candidates``):

1. ``call.wav`` with ``call.txt``, ``call.json``: its own name and stem;
2. ``call.wav`` with ``call.wav.txt``, ``call.wav.json``: the stem is taken by another
   recording's sidecars (``call.mp3`` before it), so the sidecars keep the extension;
3. ``call-1.wav`` with ``call-1.txt``..., then ``call-1.wav`` with ``call-1.wav.txt``...: its
   own name is taken, so the whole set takes the next free number.

``mimo-watchd transcribe`` names its sidecars by the same rule (``cli``).

**Templates.** A watch's ``processed_path`` and ``output_path`` (``templates``) say where in
processed_dir the audio goes and where in output_dir (else processed_dir) the sidecars go,
e.g. ``{arrived:%Y/%m}/{relpath}/{stem}{ext}``; ``layout`` renders them for a file. The names
they give take the place of the recording's own name and stem above, and the rule is the same
for the whole set: ``2026/12/call.wav`` with ``2026/12/call.txt``, then ``call.wav.txt``, then
``call-1.wav`` with ``call-1.txt``. Without templates the layout is the folders the file
arrived in; the failed folder always keeps that layout (``retry`` moves files back from it).

**Placing.** A ``Plan`` (a candidate, and the identity and hash of the file that was
transcribed) is recorded in the ledger before anything is written under its names.
``carry_out`` then claims the names with no-overwrite primitives in a fixed order: the audio
first (a hard link of exactly the inode that was transcribed, or a copy of it read through the
job's own descriptor; a no-replace rename where the kernel refuses the link), then each sidecar
(the JSON last). Whoever creates a name first owns it; a job that finds one taken removes what
it wrote under that candidate and takes the next, recording the new plan first. Concurrent jobs
(threads of one daemon, or daemons sharing a processed folder) thus never overwrite one another
or share a name, and since every job claims in the same order, one of two contenders always
gets the whole set. Only then is the inbox name removed, and only while it still names that
inode.

Sidecars are written only once the audio they name is in place: when the transcribed audio
exists nowhere any more (rewritten in place while it was transcribed), nothing is written.

**Resuming** after a crash or a failed attempt finishes the recorded plan: names holding what
this job writes (the same inode or content for the audio, the same bytes for a sidecar) are its
own.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mimo_watchd import crashpoints, days, fsutil, outputs, records, templates
from mimo_watchd.config import WatchSettings
from mimo_watchd.errors import JobError
from mimo_watchd.inputs import Identity, InputFile
from mimo_watchd.paths import is_within, relative_to

DEFAULT_PROCESSED_PATH = "{relpath}/{name}"

# No hard link of the inbox file: not ours to link (protected_hardlinks), or no hard links on
# this file system. A no-replace rename (or a copy) does instead.
_RENAME_INSTEAD = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


@dataclass(frozen=True)
class Plan:
    """Where a job's audio and sidecars go (``index``: which of its candidates), recorded in
    the ledger before anything is written there."""

    kind: str  # "done" | "failed" | "skipped"
    source: str
    audio_dest: str
    sidecar_dir: str
    stem: str
    index: int = 0
    identity: dict[str, Any] | None = None  # Identity.to_json() of the file the job used
    sha256: str | None = None
    moved_from: str | None = None  # our audio's earlier name, while it moves to audio_dest
    # The names the templates gave, before any "-N" (None: the recording's own name and stem).
    audio_name: str | None = None
    sidecar_name: str | None = None
    formats: tuple[str, ...] = outputs.DEFAULT_FORMATS  # the sidecars of a done set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        # Plans recorded before formats existed wrote the default set.
        return cls(**{**d, "formats": tuple(d.get("formats", outputs.DEFAULT_FORMATS))})


@dataclass(frozen=True)
class Placed:
    """What ``carry_out`` did: the plan it settled on, where the audio is (None: the audio
    that was transcribed exists nowhere any more, and nothing was written), the sidecars
    written (by ``outputs.key``) and what they say."""

    plan: Plan
    audio: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)


def relative_parent(watch: WatchSettings, source: Path) -> Path:
    """The sub-folder of ``source`` below the watch root ('.' for files at the top)."""
    rel = relative_to(os.path.abspath(watch.path), os.path.abspath(source))
    if not rel:
        raise JobError(f"{source} is not inside the watched folder {watch.path}")
    return Path(rel).parent


def candidates(name: str, suffixes: tuple[str, ...],
               sidecar_stem: str | None = None) -> Iterator[tuple[str, str]]:
    """The (audio name, sidecar stem) pairs offered to audio named ``name`` whose sidecars
    are named ``sidecar_stem`` (default: the stem of ``name``), in order, each fitted to
    NAME_MAX (only the stems are shortened, by whole characters)."""
    stem, ext = _split(name)
    side = stem if sidecar_stem is None else sidecar_stem
    longest = max((_size(s) for s in suffixes), default=0)
    n = 0
    while True:
        tag = "" if n == 0 else f"-{n}"
        audio = _fit(stem, _size(tag + ext)) + tag + ext
        yield audio, _fit(side, longest + _size(tag)) + tag
        if ext and suffixes:
            yield audio, _fit(side, longest + _size(tag + ext)) + tag + ext
        n += 1


def _split(name: str) -> tuple[str, str]:
    path = Path(name)
    return (path.stem, path.suffix) if path.suffix else (name, "")


def _size(text: str) -> int:
    return len(os.fsencode(text))


def _fit(stem: str, reserve: int, limit: int = 255) -> str:
    """``stem`` cut at a character boundary so that ``reserve`` more bytes fit NAME_MAX."""
    while _size(stem) > limit - reserve:
        stem = stem[:-1]
    return stem


@dataclass(frozen=True)
class Naming:
    """What a watch's path templates get besides the file's own name and folder."""

    language: str = "auto"
    arrived_at: str | None = None  # ISO 8601, as the ledger keeps it (None: now)
    timezone: str | None = None  # the operator's zone for {arrived} (None: the system's)

    def arrived(self) -> datetime:
        tz = days.zone(self.timezone)
        when = (datetime.fromisoformat(self.arrived_at) if self.arrived_at
                else datetime.now().astimezone())
        return when.astimezone(tz) if tz is not None else when.astimezone()


@dataclass(frozen=True)
class Layout:
    """Where a file's set goes before any "-N": the audio's folder and name, the sidecars'
    folder and stem."""

    audio_dir: Path
    audio_name: str
    sidecar_dir: Path
    sidecar_name: str


def layout(watch: WatchSettings, source: Path, kind: str,
           naming: Naming | None = None) -> Layout:
    """Where ``source``'s set goes (``kind``: done, skipped, failed), as the watch's templates
    say; JobError when they cannot name it (a name that leaves its folder, or one that would
    land inside the watch)."""
    rel = relative_parent(watch, source)
    stem, _ = _split(source.name)
    if kind == "failed":
        folder = watch.failed_dir / rel
        return Layout(folder, source.name, folder, stem)
    if watch.processed_path is None and watch.output_path is None:
        folder = watch.processed_dir / rel
        return Layout(folder, source.name, (watch.output_dir or watch.processed_dir) / rel, stem)
    naming = naming or Naming()
    values = {"stem": stem, "ext": source.name[len(stem):], "name": source.name,
              "relpath": "" if str(rel) == "." else str(rel), "watch": watch.path.name,
              "language": naming.language, "arrived": naming.arrived()}
    audio = Path(templates.render_path(watch.processed_path or DEFAULT_PROCESSED_PATH, values))
    sidecars = (Path(templates.render_path(watch.output_path, values)) if watch.output_path
                else audio.parent / _split(audio.name)[0])
    found = Layout(watch.processed_dir / audio.parent, audio.name,
                   (watch.output_dir or watch.processed_dir) / sidecars.parent, sidecars.name)
    for folder in (found.audio_dir, found.sidecar_dir):
        if is_within(os.path.abspath(folder), os.path.abspath(watch.path)):
            raise JobError(f"the path templates put {source.name} inside the watched folder "
                           f"({folder}); it would be taken again")
    return found


def choose(watch: WatchSettings, source: Path, kind: str, *, identity: Identity | None = None,
           sha256: str | None = None, naming: Naming | None = None) -> Plan:
    """The first candidate under which neither the audio nor its sidecars exist now."""
    where = layout(watch, source, kind, naming)
    base = Plan(kind=kind, source=str(source), audio_dest=str(where.audio_dir / where.audio_name),
                sidecar_dir=str(where.sidecar_dir), stem="",
                identity=identity.to_json() if identity else None, sha256=sha256,
                audio_name=where.audio_name, sidecar_name=where.sidecar_name,
                formats=watch.formats)
    sfx = outputs.suffixes(kind)
    for step in _steps(_at(base, 0)):
        if not _exists(Path(step.audio_dest)) and not any(
                _exists(Path(step.sidecar_dir) / (step.stem + s)) for s in sfx):
            return step
    raise AssertionError("unreachable: candidates never end")


def _at(plan: Plan, index: int) -> Plan:
    """``plan`` moved to its source's candidate number ``index``."""
    names = candidates(plan.audio_name or Path(plan.source).name, outputs.suffixes(plan.kind),
                       plan.sidecar_name)
    audio, stem = next(itertools.islice(names, index, None))
    return replace(plan, index=index, audio_dest=str(Path(plan.audio_dest).parent / audio),
                   stem=stem, moved_from=None)


def _steps(plan: Plan) -> Iterator[Plan]:
    """The plan itself, then every candidate after it, as plans."""
    yield plan
    index = plan.index
    while True:
        index += 1
        yield _at(plan, index)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def remove_stale_temps(plan: Plan, *, older_than: float) -> int:
    """Deletes temp files a killed process left in the plan's sidecar and audio folders."""
    folders = {Path(plan.sidecar_dir), Path(plan.audio_dest).parent}
    return sum(fsutil.remove_stale_temps(f, older_than=older_than) for f in folders)


def _no_record(plan: Plan, document: dict[str, Any]) -> None:
    """The default of ``carry_out``'s ``record``: nobody to tell."""


def _no_check() -> None:
    """The default of ``carry_out``'s ``before_write``: the job is always ours (one host)."""


def carry_out(plan: Plan, record: records.Record, source: InputFile | None, *,
              resuming: bool = False,
              record_plan: Callable[[Plan, dict[str, Any]], None] = _no_record,
              before_write: Callable[[], None] = _no_check) -> Placed:
    """Places the audio, writes the sidecars, then removes the inbox name (see the module).

    ``source`` is the job's opened input (None when it could not be opened again on a resume);
    ``record_plan(plan, document)`` records a changed plan durably before it is used;
    ``before_write()`` runs before each step that changes a folder and raises when the job
    may no longer write (a fleet's job whose claim was lost).
    """
    ident = Identity.from_json(plan.identity) if plan.identity else (
        source.identity if source else None)
    before_write()
    placed = _finish_move(plan)
    taken: set[str] = set()
    current = plan
    for step in _steps(plan):
        if step.audio_dest in taken:
            continue
        dest = Path(step.audio_dest)
        step = replace(step, moved_from=str(placed) if placed not in (None, dest) else None)
        document = records.moved_to(record, step.audio_dest).to_json()
        if step != current:
            record_plan(step, document)
            current = step
        if placed != dest:
            before_write()
            try:
                placed = _claim_audio(dest, placed, source, ident, step.sha256, resuming)
            except FileExistsError:
                taken.add(step.audio_dest)
                continue
            if placed is None:
                return Placed(step, None)
        crashpoints.reached("move-linked")
        before_write()
        files = _write_sidecars(step, document, resuming)
        if files is None:
            continue
        crashpoints.reached("sidecars")
        if source is not None and ident is not None:
            before_write()
            # Only while unchanged: content written into it since is new work of its own.
            fsutil.remove_name(source.dir_fd, source.name, ident.same)
        return Placed(step, placed, files, document)
    raise AssertionError("unreachable: candidates never end")


def _finish_move(plan: Plan) -> Path | None:
    """Where our audio is when the plan was moving it to a new name (else None)."""
    if plan.moved_from is None:
        return None
    old, new = Path(plan.moved_from), Path(plan.audio_dest)
    if not _exists(old):
        return new if _exists(new) else None  # moved before the crash, or gone
    try:
        fsutil.safe_move(old, new)
    except FileExistsError:
        if not os.path.samefile(old, new):
            return old  # the new name was taken meanwhile: another candidate follows
        os.unlink(old)
    return new


def _claim_audio(dest: Path, placed: Path | None, source: InputFile | None,
                 ident: Identity | None, sha256: str | None, resuming: bool) -> Path | None:
    """Gives the job's audio the name ``dest``: our audio placed under another name moves
    there, else the transcribed file is linked (or copied) from the inbox. Returns ``dest``, or
    None when the audio that was transcribed exists nowhere any more; FileExistsError when
    ``dest`` holds another file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if placed is not None:
            fsutil.safe_move(placed, dest)
            return dest
        return dest if _place_source(dest, source, ident) else None
    except FileExistsError:
        if resuming and ident is not None and _holds(dest, ident, sha256):
            return dest  # placed before the crash
        raise


def _place_source(dest: Path, source: InputFile | None, ident: Identity | None) -> bool:
    """Gives ``dest`` exactly the transcribed inode from the inbox: a hard link taken from the
    opened folder, or (no link allowed) a no-replace rename; where neither can be (another file
    system, or the name now holds another file) a copy from the job's descriptor while its
    content is unchanged. False when none is possible: the transcribed audio is gone."""
    if source is None or ident is None:
        return False
    at_source = source.at_source()
    if at_source is not None and ident.same(at_source) and _moved(source, dest, ident):
        return True
    if not ident.same(os.fstat(source.fd)):
        return False  # rewritten in place: the transcribed content is gone
    fsutil.copy_new(source.fd, dest)
    return True


def _moved(source: InputFile, dest: Path, ident: Identity) -> bool:
    """Links (or renames) the name in the inbox to ``dest`` and checks it got our inode; an
    inode swapped in meanwhile is given back. False when only a copy can do."""
    renamed = False
    try:
        fsutil.link_new(source.dir_fd, source.name, dest)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        if exc.errno not in _RENAME_INSTEAD:
            raise
        if not fsutil.rename_new(source.dir_fd, source.name, dest):
            return False
        renamed = True
    if ident.same_file(os.lstat(dest)):
        return True
    if renamed:  # someone else's file: back where it was (or beside it, if that is taken)
        fsutil.put_back(dest, source.dir_fd, source.name)
    else:
        os.unlink(dest)  # our new link names someone else's file
    return False


def _holds(dest: Path, ident: Identity, sha256: str | None) -> bool:
    """Whether ``dest`` is the job's audio: the same inode, or a copy of the same content."""
    try:
        st = os.lstat(dest)
        if ident.same_file(st):
            return True
        return (sha256 is not None and st.st_size == ident.size
                and fsutil.sha256_file(dest, follow_symlinks=False) == sha256)
    except OSError:
        return False


def _write_sidecars(step: Plan, document: dict[str, Any],
                    resuming: bool) -> dict[str, Path] | None:
    """Writes the step's sidecars, none over an existing file; None when a name is taken (what
    this call wrote is removed again). Resuming, a file with the very bytes is our own."""
    written: list[tuple[Path, bytes]] = []
    files: dict[str, Path] = {}
    for suffix, data in outputs.sidecar_files(step.kind, document, step.formats):
        path = Path(step.sidecar_dir) / f"{step.stem}{suffix}"
        try:
            fsutil.atomic_write(path, data)
            written.append((path, data))
        except FileExistsError:
            if not (resuming and _same_bytes(path, data)):
                for mine, content in written:
                    if _same_bytes(mine, content):
                        mine.unlink()
                return None
        files[outputs.key(suffix)] = path
    return files


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        return fh.read(len(data) + 1) == data
