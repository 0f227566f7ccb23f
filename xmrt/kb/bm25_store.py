r"""The SQLite file behind a BM25 index: its tables, its transactions, and the writes that keep it consistent.

Layout (one SQLite file per collection, ``<data_dir>/kb/bm25/<collection>/bm25.sqlite3``):

* ``docs(doc INTEGER PRIMARY KEY, id TEXT UNIQUE, length, terms BLOB)``: one row per chunk; ``terms``
  holds the chunk's distinct term ids, so a delete knows which postings to remove.
* ``terms(term_id INTEGER PRIMARY KEY, term TEXT UNIQUE, df)``: the vocabulary with document frequencies.
* ``postings(term_id, doc, tf)``, clustered on ``(term_id, doc)``: an inverted index, so a query reads only the
  postings of its own terms (one range scan per term).
* ``meta(key, value)``: document count, total length (for the average length), a generation number bumped by
  every write, and the tokenizer spec the index was built with.

Every add or delete runs in one SQLite transaction (WAL journal), so a crash mid-update leaves the previous
consistent state. Adding documents touches only their own postings and counters: nothing is rebuilt.

Scoring, and the reader's caches, are in :mod:`xmrt.kb.lexical` (:class:`~xmrt.kb.lexical.BM25Index` is this
store plus its reader).
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from xmrt.kb.tokens import DEFAULT_TOKENIZER, Tokenizer

#: Version of the table layout; an index with another version is emptied and rebuilt by its owner.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (doc INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                                 length INTEGER NOT NULL, terms BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS terms (term_id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE, df INTEGER NOT NULL,
                                  gen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS postings (term_id INTEGER NOT NULL, doc INTEGER NOT NULL, tf INTEGER NOT NULL,
                                     PRIMARY KEY (term_id, doc)) WITHOUT ROWID;
"""


class BM25Store:
    """One BM25 index's SQLite file, updated in place: documents, vocabulary, postings and counters.

    Args:
        path: Directory holding the index (created when missing).
        tokenizer: How texts become terms. Opening an index built with another tokenizer empties it
            (``needs_rebuild`` is then True until the caller re-adds the documents).
    """

    FILENAME = "bm25.sqlite3"

    def __init__(self, path: Path, tokenizer: Tokenizer = DEFAULT_TOKENIZER) -> None:
        self.path = Path(path)
        self.tokenizer = tokenizer
        self.needs_rebuild = False
        self._lock = threading.RLock()
        self.path.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path / self.FILENAME, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._transaction() as cur:
            tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = self._meta(cur, "schema") if "meta" in tables else None
            if tables and version != str(SCHEMA_VERSION):
                for table in ("postings", "docs", "terms", "meta"):
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                self.needs_rebuild = True
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    cur.execute(statement)
            spec = self._meta(cur, "tokenizer")
            if spec is None:
                self._set_meta(cur, schema=SCHEMA_VERSION, tokenizer=tokenizer.spec, n_docs=0, total_len=0,
                               generation=0)
            elif spec != tokenizer.spec:
                self._clear(cur)
                self._set_meta(cur, tokenizer=tokenizer.spec)
                self.needs_rebuild = True

    # -- storage helpers -------------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Cursor:
            self.cur = self.conn.cursor()
            self.cur.execute("BEGIN IMMEDIATE")
            return self.cur

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.cur.execute("COMMIT")
            else:
                self.cur.execute("ROLLBACK")
            self.cur.close()

    def _transaction(self) -> _Tx:
        return self._Tx(self._conn)

    @staticmethod
    def _meta(cur: sqlite3.Cursor, key: str) -> str | None:
        row = cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(cur: sqlite3.Cursor, **values: object) -> None:
        cur.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    def _clear(self, cur: sqlite3.Cursor) -> None:
        cur.execute("DELETE FROM postings")
        cur.execute("DELETE FROM docs")
        cur.execute("DELETE FROM terms")
        generation = int(self._meta(cur, "generation") or 0) + 1
        self._set_meta(cur, n_docs=0, total_len=0, generation=generation)

    def _remove_docs(self, cur: sqlite3.Cursor, ids: Iterable[str], gen: int) -> tuple[int, int]:
        """Delete the given ids (those present); returns (documents removed, total length removed)."""
        removed = removed_len = 0
        df_drop: Counter[int] = Counter()
        postings: list[tuple[int, int]] = []
        doomed: list[tuple[int]] = []
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            for doc, length, blob in cur.execute(
                f"SELECT doc, length, terms FROM docs WHERE id IN ({marks})", chunk
            ).fetchall():
                term_ids = array("q")
                term_ids.frombytes(blob)
                df_drop.update(term_ids)
                postings.extend((t, doc) for t in term_ids)
                doomed.append((doc,))
                removed += 1
                removed_len += length
        if not doomed:
            return 0, 0
        cur.executemany("DELETE FROM postings WHERE term_id = ? AND doc = ?", postings)
        cur.executemany("UPDATE terms SET df = df - ?, gen = ? WHERE term_id = ?",
                        [(n, gen, t) for t, n in df_drop.items()])
        cur.execute("DELETE FROM terms WHERE df <= 0")
        cur.executemany("DELETE FROM docs WHERE doc = ?", doomed)
        return removed, removed_len

    def _next_generation(self, cur: sqlite3.Cursor) -> int:
        return int(self._meta(cur, "generation") or 0) + 1

    def _bump(self, cur: sqlite3.Cursor, d_docs: int, d_len: int, gen: int) -> None:
        n_docs = int(self._meta(cur, "n_docs") or 0) + d_docs
        total = int(self._meta(cur, "total_len") or 0) + d_len
        self._set_meta(cur, n_docs=n_docs, total_len=total, generation=gen)

    # -- writes ----------------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], texts: Sequence[str], *, marker: int | None = None) -> None:
        """Add or replace documents, in one transaction. Only these documents' postings are written.

        ``marker``, when given, is stored as the sync marker in the same transaction (see :meth:`sync_marker`).
        """
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        if not ids:
            if marker is not None:
                self.set_sync_marker(marker)
            return
        latest = dict(zip(ids, texts, strict=True))  # a repeated id keeps its last text, like Chroma's upsert
        tokenized = {i: Counter(self.tokenizer(t)) for i, t in latest.items()}
        vocab = sorted({term for counts in tokenized.values() for term in counts})
        with self._lock, self._transaction() as cur:
            gen = self._next_generation(cur)
            removed, removed_len = self._remove_docs(cur, latest, gen)
            term_ids: dict[str, int] = {}
            for chunk in _chunks(vocab, 500):
                marks = ",".join("?" * len(chunk))
                term_ids.update(cur.execute(f"SELECT term, term_id FROM terms WHERE term IN ({marks})", chunk))
            missing = [(t,) for t in vocab if t not in term_ids]
            if missing:
                cur.executemany("INSERT INTO terms(term, df) VALUES (?, 0)", missing)
                for chunk in _chunks([t for (t,) in missing], 500):
                    marks = ",".join("?" * len(chunk))
                    term_ids.update(cur.execute(f"SELECT term, term_id FROM terms WHERE term IN ({marks})", chunk))
            df_add: Counter[int] = Counter()
            postings: list[tuple[int, int, int]] = []
            added_len = 0
            for doc_id, counts in tokenized.items():
                length = sum(counts.values())
                added_len += length
                tids = array("q", (term_ids[t] for t in counts))
                cur.execute("INSERT INTO docs(id, length, terms) VALUES (?, ?, ?)", (doc_id, length, tids.tobytes()))
                doc = cur.lastrowid
                postings.extend((term_ids[t], doc, tf) for t, tf in counts.items())
                df_add.update(tids)
            cur.executemany("INSERT INTO postings(term_id, doc, tf) VALUES (?, ?, ?)", postings)
            cur.executemany("UPDATE terms SET df = df + ?, gen = ? WHERE term_id = ?",
                            [(n, gen, t) for t, n in df_add.items()])
            self._bump(cur, len(tokenized) - removed, added_len - removed_len, gen)
            if marker is not None:
                self._set_meta(cur, synced=marker)

    def delete(self, ids: Sequence[str], *, marker: int | None = None) -> int:
        """Remove documents (unknown ids are ignored), in one transaction. Returns how many were removed."""
        with self._lock, self._transaction() as cur:
            removed = 0
            if ids:
                gen = self._next_generation(cur)
                removed, removed_len = self._remove_docs(cur, ids, gen)
                if removed:
                    self._bump(cur, -removed, -removed_len, gen)
            if marker is not None:
                self._set_meta(cur, synced=marker)
        return removed

    def clear(self, *, marker: int | None = None) -> None:
        """Remove every document (and set the sync marker, when given, in the same transaction)."""
        with self._lock, self._transaction() as cur:
            self._clear(cur)
            self._set_meta(cur, synced=-1 if marker is None else marker)
        self.needs_rebuild = False

    def sync_marker(self) -> int:
        """The owner's sync marker: the collection generation this index has applied (-1: none yet)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'synced'").fetchone()
        return -1 if row is None else int(row[0])

    def set_sync_marker(self, value: int) -> None:
        """Record the collection generation this index has applied."""
        with self._lock, self._transaction() as cur:
            self._set_meta(cur, synced=value)

    # -- counts ----------------------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of indexed documents."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'n_docs'").fetchone()
        return int(row[0]) if row else 0

    def ids(self) -> list[str]:
        """Every indexed id."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM docs ORDER BY doc")]

    def document_frequency(self, term: str) -> int:
        """How many indexed documents contain ``term`` (already a token)."""
        with self._lock:
            row = self._conn.execute("SELECT df FROM terms WHERE term = ?", (term,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._conn.close()


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
