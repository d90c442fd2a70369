"""Programming language of a source file from its extension (the StarCoder approach)."""

from __future__ import annotations

import posixpath

EXTENSION_LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".ipynb": "jupyter",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".cu": "cuda",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".go": "go",
    ".rs": "rust",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".rb": "ruby",
    ".php": "php",
    ".cs": "csharp",
    ".swift": "swift",
    ".m": "objective-c",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".ps1": "powershell",
    ".lua": "lua",
    ".pl": "perl",
    ".r": "r",
    ".jl": "julia",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".ex": "elixir",
    ".exs": "elixir",
    ".erl": "erlang",
    ".clj": "clojure",
    ".dart": "dart",
    ".sql": "sql",
    ".html": "html",
    ".htm": "html",
    ".css": "css",
    ".scss": "css",
    ".md": "markdown",
    ".rst": "restructuredtext",
    ".tex": "tex",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".json": "json",
    ".xml": "xml",
    ".proto": "protobuf",
    ".cmake": "cmake",
    ".mk": "makefile",
    ".f90": "fortran",
    ".v": "verilog",
}
_FILENAME_LANGUAGES = {"makefile": "makefile", "dockerfile": "dockerfile", "cmakelists.txt": "cmake"}


def language_from_path(path: str) -> str:
    """Language name for ``path``, or "unknown"."""
    name = posixpath.basename(path.replace("\\", "/")).lower()
    if name in _FILENAME_LANGUAGES:
        return _FILENAME_LANGUAGES[name]
    return EXTENSION_LANGUAGES.get(posixpath.splitext(name)[1], "unknown")
