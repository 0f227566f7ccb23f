"""Class and function signatures of source files, like RAGLight's class retriever but for more languages.

Python is parsed with :mod:`ast` (classes, functions and methods with their arguments, return annotations and
the first line of the docstring); a file that does not parse falls back to regexes. Other languages use one
set of line-anchored regexes each: JavaScript/TypeScript, Go, Rust, Java/Kotlin/C#/Scala, C/C++, Ruby, PHP
and Swift. The regexes find declarations, not every call site: they are anchored at line starts and skip
control-flow keywords.
"""

from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass

#: Longest signature kept (whitespace is collapsed first).
MAX_SIGNATURE = 300


@dataclass(frozen=True)
class Signature:
    """One declaration: qualified ``name``, ``kind`` (class, function, method, type...), text and 1-based line."""

    name: str
    kind: str
    signature: str
    line: int
    doc: str = ""

    @property
    def text(self) -> str:
        """The text indexed for a signature chunk: signature (and a method's owner), then the first docstring line."""
        head = f"{self.signature}  # {self.name}" if self.kind == "method" and "." in self.name else self.signature
        return f"{head}\n{self.doc}" if self.doc else head


def _clean(text: str) -> str:
    text = " ".join(text.split()).rstrip("{ ").rstrip()
    return text if len(text) <= MAX_SIGNATURE else text[: MAX_SIGNATURE - 1] + "…"


def _first_doc_line(node: ast.AST) -> str:
    doc = ast.get_docstring(node, clean=True) if isinstance(
        node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) else None
    if not doc:
        return ""
    return _clean(doc.strip().split("\n", 1)[0])


def python_signatures(source: str) -> list[Signature]:
    """Classes, functions and methods of a Python module, in source order.

    Raises:
        SyntaxError: The source does not parse (callers fall back to regexes).
    """
    tree = ast.parse(source)
    out: list[Signature] = []

    def visit(body: list[ast.stmt], prefix: str, in_class: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
                sig = f"class {node.name}" + (f"({', '.join(bases)})" if bases else "") + ":"
                out.append(Signature(prefix + node.name, "class", _clean(sig), node.lineno, _first_doc_line(node)))
                visit(node.body, f"{prefix}{node.name}.", True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                head = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
                ret = f" -> {ast.unparse(node.returns)}" if node.returns else ""
                sig = f"{head} {node.name}({ast.unparse(node.args)}){ret}:"
                kind = "method" if in_class else "function"
                out.append(Signature(prefix + node.name, kind, _clean(sig), node.lineno, _first_doc_line(node)))

    visit(tree.body, "", False)
    return out


_M = re.MULTILINE
_NEWLINE = re.compile("\n")
_KEYWORDS = frozenset(
    "if for while switch catch return function with else do case new throw typeof delete await sizeof elif".split()
)
_MOD = r"(?:(?:public|private|protected|internal|static|final|abstract|synchronized|native|default|override"
_MOD += r"|virtual|async|sealed|partial|open|data|inline|suspend|readonly|extern|unsafe|const)[ \t]+)"

# (pattern, kind). Every pattern has a named group ``name``.
_PATTERNS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "python": [
        (re.compile(r"^[ \t]*class[ \t]+(?P<name>\w+)[^:\n]*:", _M), "class"),
        (re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(?P<name>\w+)[ \t]*\([^)]*\)[^:\n]*:", _M), "function"),
    ],
    "js": [
        (re.compile(r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:abstract[ \t]+)?class[ \t]+"
                    r"(?P<name>[A-Za-z_$][\w$]*)[^{\n]*", _M), "class"),
        (re.compile(r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:async[ \t]+)?function[ \t]*\*?[ \t]*"
                    r"(?P<name>[A-Za-z_$][\w$]*)[ \t]*(?:<[^>\n]*>)?\([^)]*\)(?:[ \t]*:[ \t]*[^{\n]+)?", _M),
         "function"),
        (re.compile(r"^[ \t]*(?:export[ \t]+)?(?:const|let|var)[ \t]+(?P<name>[A-Za-z_$][\w$]*)[ \t]*"
                    r"(?::[^=\n]+)?=[ \t]*(?:async[ \t]+)?(?:\([^)]*\)|[A-Za-z_$][\w$]*)[ \t]*"
                    r"(?::[^=\n]+)?=>", _M), "function"),
        (re.compile(r"^[ \t]+(?:(?:public|private|protected|static|readonly|async|override|abstract|get|set)"
                    r"[ \t]+)*(?P<name>[A-Za-z_$][\w$]*)[ \t]*(?:<[^>\n]*>)?\([^)]*\)"
                    r"(?:[ \t]*:[ \t]*[^{\n;]+)?[ \t]*\{", _M), "method"),
    ],
    "ts_extra": [
        (re.compile(r"^[ \t]*(?:export[ \t]+)?(?:declare[ \t]+)?interface[ \t]+(?P<name>[A-Za-z_$][\w$]*)[^{\n]*",
                    _M), "interface"),
        (re.compile(r"^[ \t]*(?:export[ \t]+)?(?:declare[ \t]+)?(?:const[ \t]+)?enum[ \t]+(?P<name>[A-Za-z_$][\w$]*)",
                    _M), "enum"),
        (re.compile(r"^[ \t]*(?:export[ \t]+)?type[ \t]+(?P<name>[A-Za-z_$][\w$]*)[ \t]*(?:<[^>\n]*>)?[ \t]*=",
                    _M), "type"),
    ],
    "go": [
        (re.compile(r"^func[ \t]*(?:\([^)]*\)[ \t]*)?(?P<name>\w+)[ \t]*(?:\[[^\]\n]*\])?\([^)]*\)[^{\n]*", _M),
         "function"),
        (re.compile(r"^type[ \t]+(?P<name>\w+)(?:\[[^\]\n]*\])?[ \t]+(?:struct|interface)\b", _M), "type"),
    ],
    "rust": [
        (re.compile(r"^[ \t]*(?:pub(?:\([^)\n]*\))?[ \t]+)?(?:(?:const|async|unsafe|extern(?:[ \t]+\"[^\"\n]*\")?)"
                    r"[ \t]+)*fn[ \t]+(?P<name>\w+)[^{;]*", _M), "function"),
        (re.compile(r"^[ \t]*(?:pub(?:\([^)\n]*\))?[ \t]+)?(?:struct|enum|trait|union)[ \t]+(?P<name>\w+)[^{;\n]*",
                    _M), "type"),
        (re.compile(r"^[ \t]*(?:unsafe[ \t]+)?impl\b(?P<name>[^{\n]*)", _M), "impl"),
    ],
    "jvm": [
        (re.compile(rf"^[ \t]*{_MOD}*(?:class|interface|enum|record|object|@interface|struct)[ \t]+(?P<name>\w+)"
                    r"[^{\n]*", _M), "class"),
        (re.compile(rf"^[ \t]*{_MOD}+(?:<[^>\n]*>[ \t]+)?(?:[\w.\[\]?]+(?:<[^>\n]*>)?(?:\[\])*[ \t]+)?(?P<name>\w+)"
                    r"[ \t]*\([^)]*\)[^{;\n]*", _M), "method"),
        (re.compile(rf"^[ \t]*{_MOD}*fun[ \t]+(?:<[^>\n]*>[ \t]*)?(?:[\w.]+\.)?(?P<name>\w+)[ \t]*\([^)]*\)"
                    r"[^{=\n]*", _M), "function"),
        (re.compile(r"^[ \t]*(?:(?:override|private|protected|final)[ \t]+)*def[ \t]+(?P<name>\w+)[^=\n{]*", _M),
         "function"),
    ],
    "c": [
        (re.compile(r"^[ \t]*(?:template[ \t]*<[^>\n]*>[ \t]*)?(?:typedef[ \t]+)?(?:class|struct|union|enum"
                    r"(?:[ \t]+class)?)[ \t]+(?P<name>\w+)[^;{()\n]*(?=\s*\{)", _M), "class"),
        (re.compile(r"^(?!(?:if|for|while|switch|return|else|do|case|typedef)\b)(?:[A-Za-z_][\w:<>,*& \t]*?"
                    r"[ \t*&]+)?(?P<name>[A-Za-z_~][\w:~]*)[ \t]*\([^;{}()]*\)[ \t\w]*(?=\s*\{)", _M), "function"),
    ],
    "ruby": [
        (re.compile(r"^[ \t]*(?:class|module)[ \t]+(?P<name>[\w:]+)[^\n]*", _M), "class"),
        (re.compile(r"^[ \t]*def[ \t]+(?P<name>[\w.?!=]+)[^\n]*", _M), "function"),
    ],
    "php": [
        (re.compile(r"^[ \t]*(?:(?:abstract|final)[ \t]+)?(?:class|interface|trait|enum)[ \t]+(?P<name>\w+)[^{\n]*",
                    _M), "class"),
        (re.compile(r"^[ \t]*(?:(?:public|private|protected|static|abstract|final)[ \t]+)*function[ \t]+&?"
                    r"(?P<name>\w+)[ \t]*\([^)]*\)[^{;\n]*", _M), "function"),
    ],
    "swift": [
        (re.compile(r"^[ \t]*(?:(?:public|private|internal|open|final|fileprivate)[ \t]+)*(?:class|struct|enum"
                    r"|protocol|extension|actor)[ \t]+(?P<name>\w+)[^{\n]*", _M), "class"),
        (re.compile(r"^[ \t]*(?:(?:public|private|internal|open|final|static|override|fileprivate|mutating)"
                    r"[ \t]+)*func[ \t]+(?P<name>\w+)[^{\n]*", _M), "function"),
    ],
}
_LANGUAGE_PATTERNS = {
    "python": ["python"],
    "js": ["js"],
    "ts": ["js", "ts_extra"],
    "go": ["go"],
    "rust": ["rust"],
    "java": ["jvm"], "kotlin": ["jvm"], "csharp": ["jvm"], "scala": ["jvm"],
    "c": ["c"], "cpp": ["c"],
    "ruby": ["ruby"],
    "php": ["php"],
    "swift": ["swift"],
}


def regex_signatures(source: str, language: str) -> list[Signature]:
    """Declarations found by the regexes of ``language`` (empty for a language without patterns)."""
    groups = _LANGUAGE_PATTERNS.get(language)
    if not groups:
        return []
    newlines = [m.start() for m in _NEWLINE.finditer(source)]
    found: dict[int, Signature] = {}
    for group in groups:
        for pattern, kind in _PATTERNS[group]:
            for match in pattern.finditer(source):
                name = match.group("name").strip()
                if not name or name in _KEYWORDS:
                    continue
                start = match.start() + (len(match.group(0)) - len(match.group(0).lstrip()))
                line = bisect.bisect_right(newlines, start - 1) + 1
                if line in found:  # one declaration per line: the first pattern (the more specific) wins
                    continue
                sig = _clean(match.group(0))
                if kind == "impl":
                    name = _clean(name) or "impl"
                found[line] = Signature(name, kind, sig, line)
    return [found[line] for line in sorted(found)]


def extract_signatures(source: str, language: str) -> list[Signature]:
    """Signatures of a source file in ``language`` (the loader's language name), in line order."""
    if language == "python":
        try:
            return python_signatures(source)
        except (SyntaxError, ValueError, RecursionError):
            return regex_signatures(source, "python")
    return regex_signatures(source, language)
