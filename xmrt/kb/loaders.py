"""Turning files into text: type detection, HTML and PDF extraction, and the checks that skip bad files.

Every failure is a :class:`SkipFile` carrying a one-line reason; the ingest pipeline records it, logs a
warning naming the file and goes on. Nothing here raises for a bad file otherwise.

Supported types (by extension, case-insensitive):

* text: ``md``/``markdown``, ``txt``, ``rst``, ``html``/``htm`` (tags stripped with the stdlib parser),
  ``pdf`` (with ``pypdf``), ``json``, ``yaml``/``yml``, ``toml``, ``csv`` and other text files;
* code: ``py``, ``js``/``jsx``/``mjs``/``cjs``, ``ts``/``tsx``, ``go``, ``rs``, ``java``, ``kt``, ``c``/``h``,
  ``cpp``/``cc``/``cxx``/``hpp``/``hh``, ``cs``, ``rb``, ``php``, ``scala``, ``swift``, ``lua``, ``sh`` and more.

A file with an unknown extension is read as plain text when it is UTF-8 without NUL bytes (``Makefile``,
``LICENSE``, ``Dockerfile``); known binary extensions (images, archives, compiled objects) are skipped.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

log = logging.getLogger(__name__)

#: Files above this size are skipped (a knowledge base is not a place for data dumps).
MAX_FILE_BYTES = 20 * 1024 * 1024

#: Extension -> (kind, language). ``language`` names the splitter's separators (see ``splitting``).
CODE_TYPES: dict[str, str] = {
    "py": "python", "pyi": "python",
    "js": "js", "jsx": "js", "mjs": "js", "cjs": "js",
    "ts": "ts", "tsx": "ts", "mts": "ts", "cts": "ts",
    "go": "go",
    "rs": "rust",
    "java": "java",
    "kt": "kotlin", "kts": "kotlin",
    "c": "c", "h": "c",
    "cpp": "cpp", "cc": "cpp", "cxx": "cpp", "hpp": "cpp", "hh": "cpp", "hxx": "cpp",
    "cs": "csharp",
    "rb": "ruby",
    "php": "php",
    "scala": "scala",
    "swift": "swift",
    "lua": "lua",
    "sol": "sol",
    "proto": "proto",
    "r": "r",
    "pl": "perl", "pm": "perl",
    "hs": "haskell",
    "ex": "elixir", "exs": "elixir",
    "ps1": "powershell",
    "sh": "shell", "bash": "shell", "zsh": "shell",
    "sql": "sql",
}
TEXT_TYPES: dict[str, str] = {
    "md": "markdown", "markdown": "markdown", "mdx": "markdown",
    "rst": "rst",
    "txt": "text", "text": "text",
    "html": "html", "htm": "html", "xhtml": "html",
    "pdf": "pdf",
    "json": "json", "jsonl": "json", "ipynb": "json",
    "yaml": "yaml", "yml": "yaml",
    "toml": "toml", "ini": "ini", "cfg": "ini", "csv": "csv", "tsv": "csv", "xml": "xml", "tex": "latex",
}
#: Extensions that are never text; skipped as binary without reading them.
BINARY_EXTENSIONS = frozenset(
    """png jpg jpeg gif bmp ico webp tif tiff psd heic avif mp3 mp4 m4a wav ogg flac avi mov mkv webm
    zip gz tgz bz2 xz zst 7z rar tar jar war whl egg so dylib dll exe bin o a obj lib class pyc pyo pyd
    woff woff2 ttf otf eot db sqlite sqlite3 parquet arrow npy npz pkl pickle pt pth onnx safetensors gguf
    doc docx xls xlsx ppt pptx odt ods iso dmg""".split()
)


class SkipFile(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A file cannot be ingested; ``str(exc)`` is the one-line reason."""


@dataclass(frozen=True)
class FileType:
    """What a file is: ``file_type`` (extension without dot), ``kind`` ("text" | "code") and ``language``."""

    file_type: str
    kind: str
    language: str


@dataclass
class LoadedDocument:
    """The text of one file, ready for splitting.

    ``page_starts`` holds, for a PDF, the character offset where each page begins in ``text``.
    """

    text: str
    type: FileType
    page_starts: list[int] = field(default_factory=list)


def extension(path: str | Path) -> str:
    """Lower-case extension without the dot ("" when there is none)."""
    suffix = Path(path).suffix
    return suffix[1:].lower() if suffix else ""


def file_type(path: str | Path) -> FileType:
    """Classify a file by its extension."""
    ext = extension(path)
    if ext in CODE_TYPES:
        return FileType(ext, "code", CODE_TYPES[ext])
    return FileType(ext, "text", TEXT_TYPES.get(ext, "text"))


def precheck(path: Path, size: int) -> None:
    """Cheap checks before a file is read: binary extension, empty, too large.

    Raises:
        SkipFile: The file should not be read.
    """
    if extension(path) in BINARY_EXTENSIONS:
        raise SkipFile("binary file")
    if size == 0:
        raise SkipFile("empty file")
    if size > MAX_FILE_BYTES:
        raise SkipFile(f"too large ({size / 1e6:.1f} MB > {MAX_FILE_BYTES / 1e6:.0f} MB)")


def check_bytes(path: Path, data: bytes) -> None:
    """Checks on a file's bytes that need no parsing: empty, binary (a NUL byte in the first 8 KB).

    Raises:
        SkipFile: The file is empty or binary.
    """
    if not data.strip():
        raise SkipFile("empty file")
    if extension(path) != "pdf" and b"\x00" in data[:8192]:
        raise SkipFile("binary file")


def decode_text(data: bytes) -> str:
    """Decode UTF-8 (a BOM is dropped), normalising CRLF and CR line ends to LF.

    Raises:
        SkipFile: The bytes are not UTF-8.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML page: no scripts, styles or comments; blocks on their own lines."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BLOCK = frozenset(
        """p div br hr li ul ol dl dt dd h1 h2 h3 h4 h5 h6 pre blockquote table tr td th section article
        header footer nav aside main figure figcaption form title""".split()
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document (title first), one block per line, blank runs collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    body = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title).split())
    return f"{title}\n\n{body}" if title else body


def pdf_to_text(data: bytes) -> tuple[str, list[int]]:
    """Text of a PDF with ``pypdf``, pages separated by blank lines.

    Returns:
        ``(text, page_starts)``: the text and the offset where each page starts.

    Raises:
        SkipFile: ``pypdf`` is missing, the PDF is corrupt or encrypted, or it holds no extractable text.
    """
    try:
        from pypdf import PdfReader
    except ImportError:
        raise SkipFile("PDF support needs the package pypdf (pip install pypdf)") from None
    pypdf_log = logging.getLogger("pypdf")
    level = pypdf_log.level
    pypdf_log.setLevel(logging.ERROR)  # its warnings ("EOF marker not found") do not name the file; we do
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise SkipFile("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except SkipFile:
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, KeyError...) on bad files
        raise SkipFile(f"corrupt PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    finally:
        pypdf_log.setLevel(level)
    text_parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in pages:
        page = page.replace("\r\n", "\n").replace("\r", "\n").strip()
        starts.append(offset)
        text_parts.append(page)
        offset += len(page) + 2
    text = "\n\n".join(text_parts)
    if not text.strip():
        raise SkipFile("PDF has no extractable text (scanned images?)")
    return text, starts


def load_bytes(path: str | Path, data: bytes) -> LoadedDocument:
    """Turn a file's bytes into a :class:`LoadedDocument`.

    Raises:
        SkipFile: The file is empty, binary, not UTF-8, a corrupt PDF, or has no text.
    """
    path = Path(path)
    kind = file_type(path)
    check_bytes(path, data)
    pages: list[int] = []
    if kind.file_type == "pdf":
        text, pages = pdf_to_text(data)
    else:
        text = decode_text(data)
        if kind.language == "html":
            text = html_to_text(text)
    if not text.strip():
        raise SkipFile("no text")
    return LoadedDocument(text=text, type=kind, page_starts=pages)


def load_file(path: str | Path) -> LoadedDocument:
    """Read and load one file (see :func:`load_bytes`).

    Raises:
        SkipFile: The file is unreadable or unusable; the message says why.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        precheck(path, size)
        data = path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable ({exc.strerror or exc})") from None
    return load_bytes(path, data)
