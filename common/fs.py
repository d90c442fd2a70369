"""The one I/O layer for every path a user gives: inputs, eval sets, prep dir, tokenizer,
workdir, outputs, models.

Built on `etils.epath`, the filesystem abstraction TFDS and Orbax already use, so a path
that works here works in them too. Local paths (relative or absolute) are made absolute
at the command boundary with `resolve`; URIs (`gs://`, `s3://`, ...) pass through
untouched. Nothing else in the project calls `pathlib`, `glob`, `os.path` or `open` on a
user path: it calls these functions.
"""

from __future__ import annotations

import fnmatch
import glob as _local_glob
import gzip
import hashlib
import http.client
import io
import json
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from etils import epath

from common.checks import ConfigError

PathLike = str | os.PathLike | epath.Path

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_WILDCARD = re.compile(r"[*?\[]")


def is_uri(path: PathLike) -> bool:
    """True for `scheme://...` paths (object stores, test filesystems)."""
    return bool(_URI.match(os.fspath(path)))


def resolve(path: PathLike) -> str:
    """A local path made absolute and normalised; a URI returned unchanged (as str)."""
    text = os.fspath(path)
    if not text:
        raise ValueError("empty path")
    if is_uri(text):
        return text
    return os.path.abspath(os.path.expanduser(text))


def as_path(path: PathLike) -> epath.Path:
    """An `epath.Path` for `path`, absolute when local (Orbax requires that)."""
    text = resolve(path)
    if text.startswith("gs://"):
        _require_gcs_credentials(text)
    return epath.Path(text)


class NoCredentials(ConfigError):
    """A gs:// path with no Google Cloud credentials to reach it: one line, exit 2."""


# Where Google's clients (TensorFlow's GCS filesystem, google-auth) find credentials, in
# their order: a key file, the test token / emulator, `gcloud auth application-default login`.
_CREDENTIAL_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "STORAGE_EMULATOR_HOST")
_gcs_credentials_found = False


def _require_gcs_credentials(path: str) -> None:
    """Raises NoCredentials unless some credentials are there, in about a second at most.

    Without any, the clients probe the GCE metadata server with retries and fail after
    8-10 s with a traceback naming neither the path nor the remedy. Found once, not asked again.
    """
    global _gcs_credentials_found
    if _gcs_credentials_found:
        return
    gcloud = os.environ.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud")
    _gcs_credentials_found = (
        any(os.environ.get(name) for name in _CREDENTIAL_ENV)
        or os.path.isfile(os.path.join(gcloud, "application_default_credentials.json"))
        or _on_google_cloud()
    )
    if not _gcs_credentials_found:
        raise NoCredentials(
            f"{path}: no Google Cloud credentials (GOOGLE_APPLICATION_CREDENTIALS is unset, there is no "
            f"{gcloud}/application_default_credentials.json, and this is not a Google Cloud VM); run "
            "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
        )


def _on_google_cloud() -> bool:
    """Whether the GCE metadata server (a VM's own service account) answers, as google-auth asks it."""
    host = os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP") or "169.254.169.254"
    try:
        connection = http.client.HTTPConnection(host, timeout=1)
        connection.request("GET", "/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"})
        return connection.getresponse().getheader("Metadata-Flavor") == "Google"
    except OSError:
        return False


def join(base: PathLike, *parts: str) -> str:
    """`base/part/...` without mangling `scheme://` (unlike pathlib, which makes `gs:/`)."""
    text = resolve(base) if not is_uri(base) else os.fspath(base)
    for part in parts:
        text = text.rstrip("/") + "/" + str(part).lstrip("/")
    return text


def basename(path: PathLike) -> str:
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


def dirname(path: PathLike) -> str:
    text = os.fspath(path).rstrip("/")
    head = text.rsplit("/", 1)[0] if "/" in text else "."
    return head + "/" if head.endswith(":/") else head


def exists(path: PathLike) -> bool:
    return as_path(path).exists()


def isdir(path: PathLike) -> bool:
    return as_path(path).is_dir()


def isfile(path: PathLike) -> bool:
    p = as_path(path)
    return p.exists() and not p.is_dir()


def makedirs(path: PathLike) -> str:
    as_path(path).mkdir(parents=True, exist_ok=True)
    return resolve(path)


def listdir(path: PathLike) -> list[str]:
    """Sorted entry names (not paths) of a directory."""
    return sorted(p.name for p in as_path(path).iterdir())


def rmtree(path: PathLike) -> None:
    p = as_path(path)
    if p.exists():
        p.rmtree() if p.is_dir() else p.unlink()


def rename(src: PathLike, dst: PathLike) -> None:
    as_path(src).rename(resolve(dst))


def replace(src: PathLike, dst: PathLike) -> None:
    """Renames the file `src` to `dst`, replacing a file there (`rename` refuses)."""
    as_path(src).replace(resolve(dst))


def move(src: PathLike, dst: PathLike) -> None:
    """Moves a file or a whole directory to `dst`, creating `dst`'s parent.

    One rename on a local disk; object stores have no directory rename, so there the
    files move one by one.
    """
    makedirs(dirname(resolve(dst)))
    if not is_uri(src) or not isdir(src):
        rename(src, dst)
        return
    source = os.fspath(src).rstrip("/")
    for path in walk_files(source):
        target = os.fspath(dst).rstrip("/") + path[len(source) :]
        makedirs(dirname(target))
        rename(path, target)
    rmtree(source)  # what an object store may keep of the emptied "directories"


def copy(src: PathLike, dst: PathLike, overwrite: bool = True) -> None:
    as_path(src).copy(resolve(dst), overwrite=overwrite)


def open(path: PathLike, mode: str = "r") -> IO[Any]:  # noqa: A001 - the I/O layer's open
    """A file object; `r`/`w`/`a` with optional `b`. Parents are created for writes.

    Binary reads of a URI return an `io.BufferedReader`, like a local `open(path, "rb")`:
    the object-store file (tf.io.gfile's GFile) lacks `readable`/`readinto`/`peek`, which
    gzip, zstandard and `io` wrappers expect.
    """
    p = as_path(path)
    if mode[0] in "wa":
        p.parent.mkdir(parents=True, exist_ok=True)
    if mode == "rb" and is_uri(path):
        return io.BufferedReader(_RawReader(p.open("rb")), buffer_size=1 << 20)
    return p.open(mode)


class _RawReader(io.RawIOBase):
    """The raw-stream interface over a remote file object with read/seek/tell/close."""

    def __init__(self, handle: Any):
        # etils' gfile backend hands out a context manager that yields the GFile.
        self._context = None if hasattr(handle, "read") else handle
        self._f = handle.__enter__() if self._context is not None else handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._f.seek(offset, whence)
        return self._f.tell()

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if not self.closed:
            if self._context is not None:
                self._context.__exit__(None, None, None)
            else:
                self._f.close()
        super().close()


def open_decompressed(path: PathLike) -> IO[bytes]:
    """`path` opened for binary reading, .gz / .zst undone by the file's own name."""
    return _decompressed(path, open(path, "rb"))


def _decompressed(path: PathLike, raw: IO[bytes]) -> IO[bytes]:
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        )
    return raw


def read_jsonl(path: PathLike) -> Iterator[Any]:
    """The JSON value of each non-blank line of `path`, streamed (.gz / .zst undone by the
    file's name). A line that is not UTF-8 JSON raises ValueError naming file and line."""
    with open(path, "rb") as raw, _decompressed(path, raw) as lines:
        for number, data in enumerate(lines, 1):
            if not data.strip():
                continue
            try:
                value = json.loads(data.decode("utf-8"))
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"{path}: line {number}: not a JSON line ({e})") from e
            yield value


class DamagedState(ConfigError):
    """A JSON file a command wrote for later runs (config.json, manifest.json, a marker)
    does not parse: one line naming it (exit 2); rerunning cannot help, the file must be
    restored or remade."""


def read_json_state(path: PathLike, remedy: str, kind: type = dict) -> Any:
    """The JSON value of a state file, which must be a `kind` (a JSON object by default).

    A file cut short (a full disk, a kill mid-write, an editor) or holding something else
    raises DamagedState: "`path`: not a valid JSON state file (why); `remedy`". Every reader
    of a project's JSON state goes through here, so each fails the same way, in one line.
    """
    try:
        value = json.loads(read_bytes(path).decode("utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedState(
            f"{path}: not a valid JSON state file (truncated or damaged: {e}); {remedy}"
        ) from None
    if not isinstance(value, kind):
        raise DamagedState(
            f"{path}: not a valid JSON state file (a JSON {type(value).__name__}, not {kind.__name__}); {remedy}"
        )
    return value


def read_text(path: PathLike) -> str:
    return as_path(path).read_text(encoding="utf-8")


def read_bytes(path: PathLike) -> bytes:
    return as_path(path).read_bytes()


def sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: PathLike, text: str) -> None:
    p = as_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replaces the file's content all at once: a reader, or a kill, never sees half of it.

    Locally the text goes to a sibling temporary file renamed over `path` (rename is
    atomic on POSIX); object stores (`gs://`, ...) publish an object only when its upload
    completes, so a plain write already has that property there.
    """
    if is_uri(path):
        write_text(path, text)
        return
    target = resolve(path)
    tmp = f"{target}.tmp-{os.getpid()}"
    write_text(tmp, text)
    os.replace(tmp, target)


def write_bytes(path: PathLike, data: bytes) -> None:
    p = as_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


# How every command's path patterns read (their --help says it).
PATTERN_HELP = (
    "a path that exists is that file or folder, whatever its name holds; otherwise *, ?, [abc] "
    "and ** (any depth) are wildcards ([[] matches a literal [)"
)


def has_wildcard(pattern: PathLike) -> bool:
    return bool(_WILDCARD.search(os.fspath(pattern)))


def glob(pattern: PathLike) -> list[str]:
    """Sorted paths matching `pattern` (`*`, `?`, `[..]`, and `**` for any depth).

    A pattern that names an existing path (a directory too) is that path, even when its
    name holds wildcard characters: a file `web[1].jsonl` is read, not `web1.jsonl`
    (PATTERN_HELP). URIs keep their scheme in the results.
    """
    text = os.fspath(pattern)
    if exists(text):
        return [resolve(text)]
    if not has_wildcard(text):
        return []
    if not is_uri(text):
        return sorted(_local_glob.glob(resolve(text), recursive=True))
    parts = text.split("/")
    first = next(i for i, part in enumerate(parts) if _WILDCARD.search(part))
    base = "/".join(parts[:first])
    rest = parts[first:]
    return sorted(_glob_uri(base, rest))


def _glob_uri(base: str, rest: list[str]) -> Iterator[str]:
    if not rest:
        yield base
        return
    head, tail = rest[0], rest[1:]
    if not isdir(base):
        return
    if head == "**":
        yield from _glob_uri(base, tail)
        for name in listdir(base):
            child = f"{base}/{name}"
            if isdir(child):
                yield from _glob_uri(child, rest)
        return
    for name in listdir(base):
        if fnmatch.fnmatchcase(name, head):
            yield from _glob_uri(f"{base}/{name}", tail)


def walk_files(root: PathLike) -> list[str]:
    """Every file under `root` (a directory), sorted; `root` itself if it is a file."""
    if not isdir(root):
        return [resolve(root)] if exists(root) else []
    out = []
    base = resolve(root)
    for dirpath, _, files in as_path(base).walk():
        out.extend(os.fspath(epath.Path(dirpath) / name) for name in files)
    return sorted(out)
