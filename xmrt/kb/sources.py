"""Where files come from: local files and folders, or git repositories cloned shallowly into a cache.

* A **file** or **folder** is read in place. Folders are walked with a default ignore list
  (:data:`IGNORED_DIRS`, :data:`IGNORED_FILES`) plus the caller's ``--include``/``--exclude`` globs.
* A **git repository**, given by clone URL (``https://``, ``ssh://``, ``git@host:``, ``git://``, ``file://``)
  or by the path of a local repository, is cloned with ``git clone --depth 1`` into
  ``<data_dir>/kb/git/<name>-<hash>``; later ingests fetch into the same clone. The default branch is asked
  from the remote (``git ls-remote --symref URL HEAD``), never assumed to be ``main``; ``branch`` overrides it.
  ``GITHUB_TOKEN`` authenticates https GitHub URLs through an HTTP header passed in git's environment, so it
  appears in no command line, URL, log line, error message or chunk metadata. Git never prompts
  (``GIT_TERMINAL_PROMPT=0``, ssh in batch mode) and every git command has a timeout.

Labels: files of a folder are labelled by their path relative to the folder (``source``), the folder by its
absolute path (``source_root``). Files of a repository are labelled ``<repo-url>/<path>`` and the repository
by its URL, with any credentials removed.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from xmrt.config import Config
from xmrt.errors import UserError

log = logging.getLogger(__name__)

#: Directory names never descended into.
IGNORED_DIRS = frozenset(
    """.git .hg .svn .venv venv .env node_modules __pycache__ build dist .tox .nox .mypy_cache .pytest_cache
    .ruff_cache .ipynb_checkpoints target .idea .vscode .eggs .gradle .next .nuxt .cache .terraform
    bower_components site-packages""".split()
)
#: Directory name patterns never descended into.
IGNORED_DIR_GLOBS = ("*.egg-info",)
#: File name patterns skipped silently (lock files, minified bundles, OS litter).
IGNORED_FILES = (
    ".DS_Store", "Thumbs.db", "*.pyc", "*.pyo", "*.min.js", "*.min.css", "*.map", "package-lock.json",
    "yarn.lock", "pnpm-lock.yaml", "Cargo.lock", "poetry.lock", "uv.lock", "Pipfile.lock", "composer.lock",
)

GIT_TIMEOUT = 300  # seconds for clone/fetch
LS_REMOTE_TIMEOUT = 60

_URL = re.compile(r"^(?:https?|git|ssh|file)://", re.IGNORECASE)
_SCP = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")


class GitSourceError(UserError):
    """A git repository cannot be reached, or its branch does not exist."""


@dataclass
class ResolvedSource:
    """An ingest source made local.

    Attributes:
        kind: "folder", "file" or "git".
        root: The local folder (or file) to read.
        source_root: Label of the whole source in metadata (absolute path, or repository URL).
        prefix: Prefix of each file's label: "" for folders, ``<repo-url>/`` for repositories.
        url: The repository URL without credentials (git only).
        branch: The branch ingested (git only).
        commit: The commit ingested (git only).
    """

    kind: str
    root: Path
    source_root: str
    prefix: str = ""
    url: str | None = None
    branch: str | None = None
    commit: str | None = None

    def label(self, rel: str) -> str:
        """The ``source`` label of a file at ``rel`` (posix, relative to ``root``)."""
        return f"{self.prefix}{rel}"

    def extra_metadata(self) -> dict[str, str]:
        """Scalar metadata added to every chunk of this source."""
        if self.kind != "git":
            return {}
        return {"git_url": self.url or "", "git_branch": self.branch or "", "git_commit": self.commit or ""}


@dataclass
class FileEntry:
    """A file found in a source: absolute ``path``, posix ``rel`` path, ``size`` in bytes, and why to skip it."""

    path: Path
    rel: str
    size: int
    skip: str = ""


@dataclass
class Globs:
    """User include/exclude globs, matched against posix paths relative to the root (``*`` crosses ``/``).

    A pattern without a slash also matches the base name. ``**/`` may match no directory at all. An exclude
    pattern that matches a directory prunes the whole directory.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _variants: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def _forms(self, pattern: str) -> tuple[str, ...]:
        if pattern not in self._variants:
            clean = pattern.strip().removeprefix("./")
            forms = {clean.rstrip("/")}
            if "**/" in clean:
                forms.add(clean.replace("**/", ""))
            self._variants[pattern] = tuple(forms)
        return self._variants[pattern]

    def _match(self, rel: str, patterns: Iterable[str]) -> bool:
        name = rel.rsplit("/", 1)[-1]
        for pattern in patterns:
            for form in self._forms(pattern):
                if fnmatch.fnmatchcase(rel, form) or ("/" not in form and fnmatch.fnmatchcase(name, form)):
                    return True
                if fnmatch.fnmatchcase(rel, form + "/*"):  # "docs" excludes everything under docs/
                    return True
        return False

    def excluded(self, rel: str) -> bool:
        """True when ``rel`` (file or directory) matches an exclude pattern."""
        return bool(self.exclude) and self._match(rel, self.exclude)

    def included(self, rel: str) -> bool:
        """True when there are no include patterns, or ``rel`` matches one."""
        return not self.include or self._match(rel, self.include)


def _ignored_dir(name: str) -> bool:
    return name in IGNORED_DIRS or any(fnmatch.fnmatchcase(name, g) for g in IGNORED_DIR_GLOBS)


def _ignored_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in IGNORED_FILES)


def walk_files(root: Path, globs: Globs | None = None, *, confine: bool = True) -> Iterator[FileEntry]:
    """Files under ``root`` in sorted order, without ignored directories, ignored names or excluded paths.

    Symbolic links to directories are not followed. With ``confine`` (the default), a file that is a symbolic
    link to somewhere outside ``root`` is not read (it comes with ``skip`` set): a cloned repository (or a folder
    under the ingest roots) cannot make the system read files elsewhere. A directory that cannot be listed is
    logged and skipped.
    """
    globs = globs or Globs()
    root = Path(root)
    real_root = root.resolve()
    if root.is_file():
        yield FileEntry(root, root.name, root.stat().st_size)
        return

    def on_error(exc: OSError) -> None:
        log.warning("skipping %s: cannot list directory (%s)", exc.filename, exc.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not _ignored_dir(d) and not globs.excluded(rel_dir + d))
        for name in sorted(filenames):
            rel = rel_dir + name
            if _ignored_file(name) or globs.excluded(rel) or not globs.included(rel):
                continue
            path = base / name
            if confine and path.is_symlink() and not path.resolve().is_relative_to(real_root):
                yield FileEntry(path, rel, -1, "a symbolic link to a file outside the source (not followed)")
                continue
            try:
                size = path.stat().st_size
            except OSError:
                size = -1  # unreadable (e.g. a broken link): the loader reports it
            yield FileEntry(path, rel, size)


# -- git ---------------------------------------------------------------------------------------------------


def is_git_url(source: str) -> bool:
    """True for a clone URL (``https://``, ``ssh://``, ``git://``, ``file://`` or scp-like ``git@host:path``)."""
    return bool(_URL.match(source) or _SCP.match(source))


def is_local_repo(path: Path) -> bool:
    """True when ``path`` is the top directory of a git work tree (or a bare repository)."""
    return path.is_dir() and ((path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir()))


def public_url(url: str) -> str:
    """``url`` without user name, password or token, and without a trailing slash."""
    if _URL.match(url):
        parts = urlsplit(url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url.rstrip("/")


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)


class Git:
    """Runs git for one repository URL with a non-interactive environment and optional GitHub token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.public = public_url(url)
        self.token = token
        env = dict(os.environ)
        env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never", GIT_ASKPASS="", SSH_ASKPASS="",
                   GIT_SSH_COMMAND="ssh -o BatchMode=yes -o ConnectTimeout=20", LC_ALL="C")
        parts = urlsplit(url) if _URL.match(url) else None
        self._secrets = [token] + ([parts.password] if parts and parts.password else [])
        if token and parts and parts.scheme.lower() == "https" and (parts.hostname or "").lower() in (
            "github.com", "www.github.com"
        ):
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            self._secrets.append(basic)
            n = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
            env[f"GIT_CONFIG_KEY_{n}"] = "http.https://github.com/.extraheader"
            env[f"GIT_CONFIG_VALUE_{n}"] = f"AUTHORIZATION: basic {basic}"
            env["GIT_CONFIG_COUNT"] = str(n + 1)
        self.env = env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = GIT_TIMEOUT) -> str:
        """Run ``git args...``; returns stdout.

        Raises:
            GitSourceError: git is missing, times out or fails; the message is redacted.
        """
        try:
            proc = subprocess.run(
                ["git", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise GitSourceError("git is not installed; it is needed to ingest repositories") from None
        except subprocess.TimeoutExpired:
            raise GitSourceError(
                f"git repository {self.public} did not answer within {timeout:.0f}s (git {args[0]})"
            ) from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            detail = next((ln for ln in lines if ln.lower().startswith(("fatal", "error"))),
                          lines[-1] if lines else f"exit code {proc.returncode}")
            detail = re.sub(r"^(fatal|error):\s*", "", detail, flags=re.IGNORECASE)
            what = "cannot reach git repository" if args[0] == "ls-remote" else f"git {args[0]} failed for"
            raise GitSourceError(_redact(f"{what} {self.public}: {detail}", self._secrets))
        return proc.stdout

    def default_branch(self) -> str | None:
        """The remote's default branch, from ``git ls-remote --symref URL HEAD``.

        Returns:
            The branch name, or None when the remote does not advertise its HEAD (dumb servers).

        Raises:
            GitSourceError: The repository cannot be reached.
        """
        out = self.run("ls-remote", "--symref", self.url, "HEAD", timeout=LS_REMOTE_TIMEOUT)
        for line in out.splitlines():
            if line.startswith("ref:") and line.rstrip().endswith("HEAD"):
                ref = line.split()[1]
                return ref.removeprefix("refs/heads/")
        return None


def _cache_dir(config: Config, url: str) -> Path:
    name = re.sub(r"[^\w.-]+", "-", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40] or "repo"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(config.data_dir) / "kb" / "git" / f"{name}-{digest}"


def clone_repository(config: Config, url: str, branch: str | None = None) -> ResolvedSource:
    """Shallow-clone (or update the cached clone of) ``url`` at ``branch`` or the remote's default branch.

    Raises:
        GitSourceError: The repository cannot be reached, or the branch does not exist; one line, redacted.
    """
    git = Git(url, config.github_token)
    remote_default = git.default_branch()  # also the reachability check: fails fast with one clear line
    branch = branch or remote_default
    target = _cache_dir(config, git.public)
    target.parent.mkdir(parents=True, exist_ok=True)
    ref = branch or "HEAD"
    if (target / ".git").is_dir():
        try:
            git.run("fetch", "--depth", "1", "--no-tags", url, ref, cwd=target)
            git.run("checkout", "--force", "--detach", "FETCH_HEAD", cwd=target)
            git.run("clean", "-ffdqx", cwd=target)
        except GitSourceError as exc:
            if branch and "couldn't find remote ref" in str(exc):
                raise GitSourceError(f"branch {branch!r} does not exist in {git.public}") from None
            log.info("cached clone of %s is unusable (%s); cloning again", git.public, exc)
            shutil.rmtree(target, ignore_errors=True)
    if not (target / ".git").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            args = ["clone", "--depth", "1", "--no-tags", "--single-branch", "--quiet"]
            if branch:
                args += ["--branch", branch]
            try:
                git.run(*args, url, str(tmp / "repo"))
            except GitSourceError as exc:
                if branch and ("not found in upstream" in str(exc) or "Remote branch" in str(exc)):
                    raise GitSourceError(f"branch {branch!r} does not exist in {git.public}") from None
                raise
            # keep no credentials in the cached clone's config
            git.run("remote", "set-url", "origin", git.public, cwd=tmp / "repo")
            shutil.rmtree(target, ignore_errors=True)
            (tmp / "repo").rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    commit = git.run("rev-parse", "HEAD", cwd=target).strip()
    if not branch:
        branch = git.run("rev-parse", "--abbrev-ref", "HEAD", cwd=target).strip()
    return ResolvedSource(
        kind="git", root=target, source_root=git.public, prefix=f"{git.public}/", url=git.public,
        branch=branch, commit=commit,
    )


def resolve_source(config: Config, source: str, branch: str | None = None, working_tree: bool = False
                   ) -> ResolvedSource:
    """Make ``source`` (path or clone URL) local.

    Args:
        config: Runtime configuration (``data_dir`` for the clone cache, ``github_token``).
        source: A file, a folder, a local repository, or a clone URL.
        branch: Branch to ingest (git only); the remote's default branch when None.
        working_tree: Read a local repository's files as they are on disk instead of cloning its commits.

    Raises:
        UserError: The path does not exist, or ``branch`` was given for a plain folder.
        GitSourceError: A repository cannot be reached.
        xmrt.policy.PolicyError: The caller may not read this source (a served API request outside
            ``XMRT_INGEST_ROOTS``, a git transport that runs commands, an option-like source).
    """
    from xmrt.policy import check_ingest_source

    source = source.strip()
    if not source:
        raise UserError("nothing to ingest: the source is empty")
    # The access policy, where the source is resolved: whatever graph, assistant, tool or action asked for it.
    check_ingest_source(config, source)
    if is_git_url(source) and not Path(source).exists():
        return clone_repository(config, source, branch)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"{source}: no such file or directory")
    path = path.resolve()
    if path.is_file():
        if branch:
            raise UserError(f"--branch applies to git repositories, not to the file {source}")
        return ResolvedSource(kind="file", root=path, source_root=str(path))
    if is_local_repo(path) and not working_tree:
        return clone_repository(config, path.as_uri(), branch)
    if branch:
        raise UserError(f"--branch applies to git repositories; {source} is a plain folder")
    return ResolvedSource(kind="folder", root=path, source_root=str(path))
