"""The results store: one SQLite database per results directory (`<out>/normlab.db`).

Schema (version 3, kept in `PRAGMA user_version`; an older database is upgraded in place
when opened; one from a newer normlab is refused with a clear message rather than misread):

    experiments(name TEXT PK, description TEXT, spec_json TEXT, created_at REAL, updated_at REAL)
    runs(run_id TEXT PK            -- RunConfig.run_id: sha256 of the resolved config, 16 hex
         config_json TEXT           -- the resolved config (canonical JSON)
         status TEXT                -- queued | running | finished | failed | diverged
         error TEXT                 -- traceback of a failed run, reason of an interruption
         created_at, started_at, finished_at REAL  -- unix seconds (UTC)
         seconds REAL               -- training wall time reported by the run (s)
         steps INTEGER, attempts INTEGER, final_json TEXT (final metrics)
         python, torch, normlab, git_commit, device, hostname TEXT,  -- where it ran
         torch_threads INTEGER,     -- v2: intra-op threads (CPU digits depend on them)
         data_fingerprint TEXT)     -- v3: sha256 of the dataset arrays it trained on
    experiment_runs(experiment, run_id, grp, position; PK(experiment, run_id, grp))
                                    -- membership: a run (one config) is trained and stored
                                    -- once, and may belong to several experiments / groups;
                                    -- re-registering an experiment redefines its membership
    metrics(run_id, name, step, epoch, value; PK(run_id, name, step))
                                    -- a resumed run re-emitting a step replaces, never duplicates;
                                    -- rows past its checkpoint's step are dropped at resume
    artifacts(run_id, kind, path, created_at; PK(run_id, path))  -- paths relative to <out>

Every write is one transaction (`with self._conn:`), so a process killed at any moment
(SIGKILL included) leaves either the old row or the new one, never half of one. The database
runs in WAL mode: one writer at a time (the runner's parent process), readers never block it.

The analysis layer reads only through `experiments()`, `runs_frame()` and `metrics_frame()`.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from normlab.experiments.config import Experiment, config_json
from normlab.experiments.errors import StoreError
from normlab.experiments.paths import check_name
from normlab.provenance import RUN_KEYS
from normlab.train.config import with_current_keys

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 3
DB_NAME = "normlab.db"
STATUSES = ("queued", "running", "finished", "failed", "diverged")
DONE_STATUSES = ("finished", "diverged")
READ_CHECK_BYTES = 64 * 2**20
WAL_WAIT_SECONDS = 30.0
ENV_KEYS = (*RUN_KEYS, "data_fingerprint")  # what a run records about itself, + its data
_MIGRATIONS = {  # from version -> SQL to the next version
    1: "ALTER TABLE runs ADD COLUMN torch_threads INTEGER",
    2: "ALTER TABLE runs ADD COLUMN data_fingerprint TEXT",
}

_SCHEMA = f"""
CREATE TABLE experiments (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    spec_json TEXT NOT NULL DEFAULT '{{}}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    steps INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    final_json TEXT,
    python TEXT, torch TEXT, normlab TEXT, git_commit TEXT, device TEXT, hostname TEXT,
    torch_threads INTEGER,
    data_fingerprint TEXT
);
CREATE TABLE experiment_runs (
    experiment TEXT NOT NULL REFERENCES experiments(name),
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    grp TEXT NOT NULL DEFAULT '',
    position INTEGER NOT NULL,
    PRIMARY KEY (experiment, run_id, grp)
);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;
CREATE TABLE artifacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX experiment_runs_by_run ON experiment_runs(run_id);
"""


def _sqlite_errors(method: Callable) -> Callable:
    """Any sqlite error of a store method becomes one StoreError naming the file (a damaged,
    locked or full database is the user's to fix, not a traceback)."""

    @functools.wraps(method)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    return guarded


def flatten_config(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'weight_decay': 0}} -> {'optim.weight_decay': 0}; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            # JSON text, not a list: hashable for groupby and exportable to CSV/parquet.
            flat[f"{prefix}{key}"] = json.dumps(value, separators=(",", ":"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Store:
    """The SQLite results store of one results directory.

    Args:
        path: the database file (`<out>/normlab.db`), or the results folder that holds it.
        create: create the database (and its folder) when missing; False raises StoreError.

    Example:
        >>> store = Store.open("runs")
        >>> store.experiments()
        ['mnist1d-norm-batch']
        >>> runs = store.runs_frame("mnist1d-norm-batch")   # one row per (run, group)
        >>> curves = store.metrics_frame("mnist1d-norm-batch", names=["test_acc"])
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():  # a results folder: its database
            self.path = self.path / DB_NAME
        if self.path.is_symlink():  # writes would land wherever the link points
            raise StoreError(
                f"{str(self.path)!r} is a symlink; normlab opens only a real "
                "database file: remove the link or choose another --out"
            )
        self.readonly = not create if readonly is None else readonly
        if not self.path.exists():
            if not create:
                raise StoreError(
                    f"no results store at {str(self.path)!r}; run `normlab sweep` or "
                    "`normlab run` with this --out first, or point --out at a results folder"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.readonly:  # a reader cannot change the file, whatever it holds
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            else:
                self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._prepare()
            self._check_integrity()
        except sqlite3.Error as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise self._error(exc) from None
        self._conn.isolation_level = "DEFERRED"  # `with conn:` = one transaction

    @classmethod
    def open(cls, out_dir: str | Path, *, create: bool = True, readonly: bool | None = None) -> Store:
        """The store of a results directory (`<out_dir>/normlab.db`); `create=False` opens it
        read-only unless `readonly=False`."""
        return cls(Path(out_dir) / DB_NAME, create=create, readonly=readonly)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """One message for an sqlite error: the file, what went wrong, what to do."""
        text = " ".join(str(exc).split())  # one line
        where = f"results database {str(self.path)!r}"
        if "locked" in text or "busy" in text:
            return StoreError(
                f"the {where} is locked by another process ({text}); wait for it to end and run the command again"
            )
        if "full" in text:
            return StoreError(
                f"no space left for the {where} ({text}); free disk space and run "
                "the command again (stored runs are kept, interrupted ones resume)"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"cannot write the {where} ({text}); make it and its folder writable, or choose another --out"
            )
        return StoreError(
            f"the {where} is damaged or not a normlab results database ({text}); move it away "
            "(or restore a backup) and rerun the sweep to train its runs again, or choose another "
            "--out; `sqlite3 normlab.db .recover` may save its rows"
        )

    def _check_integrity(self) -> None:
        """The database is intact (PRAGMA quick_check reads every page: 0.5 s for a 72 MiB
        store of 1.5 M metric rows, 2-core shared CPU, 2026-12-05); a reader skips it for a
        file over READ_CHECK_BYTES (sqlite still refuses a page it cannot read, and a writer
        always checks)."""
        if self.readonly and self.path.stat().st_size > READ_CHECK_BYTES:
            return
        problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(2)")]
        if problems != ["ok"]:  # one line: sqlite's report spans several
            raise sqlite3.DatabaseError(f"integrity check: {' '.join(' '.join(problems).split())}")

    def _prepare(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} was written by a newer normlab (store schema v{version}; "
                f"this normlab reads v{SCHEMA_VERSION}); upgrade normlab or use another --out"
            )
        if version < SCHEMA_VERSION and self.readonly:  # set up or upgrade through a writer
            Store(self.path, create=False, readonly=False).close()
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # Two processes may create a new store at once: the first takes the write lock
            # and creates the tables; the second waits, then finds them and goes on.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                tables = self._conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
                if version == 0 and tables:
                    raise StoreError(
                        f"{str(self.path)!r} holds tables but no normlab schema version; it is not "
                        "a normlab results database: choose another --out folder"
                    )
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    version = SCHEMA_VERSION
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        while 0 < version < SCHEMA_VERSION:  # upgrade in place, one version per transaction
            self._conn.execute("BEGIN IMMEDIATE")
            try:  # read again under the lock: another process may have upgraded it meanwhile
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    self._conn.execute(_MIGRATIONS[version])
                    self._conn.execute(f"PRAGMA user_version = {version + 1}")
                    version += 1
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        if not self.readonly:
            self._use_wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _use_wal(self) -> None:
        """Switch the database to WAL (once; it stays so). The switch needs the database to
        itself and sqlite does not wait for that, so a store opened by several processes at
        once retries for up to WAL_WAIT_SECONDS."""
        deadline = time.monotonic() + WAL_WAIT_SECONDS
        while self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked (switching to WAL)")
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing (the runner's parent process is the only writer) -------------------------

    @_sqlite_errors
    def add_experiment(self, experiment: Experiment, *, append: bool = False) -> None:
        """Register an experiment and its runs (new runs as 'queued'; stored runs are kept).

        The experiment's membership becomes exactly `experiment.runs` (so editing a file never
        mixes stale variants into its results; the old runs stay stored and are reused if the
        file goes back); `append=True` adds the runs to the existing ones instead.
        """
        now = time.time()
        with self._conn:
            if not append:
                self._conn.execute("DELETE FROM experiment_runs WHERE experiment = ?", (experiment.name,))
            self._conn.execute(
                "INSERT INTO experiments(name, description, spec_json, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "description = excluded.description, spec_json = excluded.spec_json, "
                "updated_at = excluded.updated_at",
                (experiment.name, experiment.description, json.dumps(experiment.spec, default=str), now, now),
            )
            start = self._conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM experiment_runs WHERE experiment = ?",
                (experiment.name,),
            ).fetchone()[0]
            for i, run in enumerate(experiment.runs):
                self._conn.execute(
                    "INSERT OR IGNORE INTO runs(run_id, config_json, status, created_at) VALUES (?, ?, 'queued', ?)",
                    (run.run_id, config_json(run.config), now),
                )
                self._conn.execute(
                    "INSERT OR IGNORE INTO experiment_runs(experiment, run_id, grp, position) VALUES (?, ?, ?, ?)",
                    (experiment.name, run.run_id, run.group, start + i),
                )

    @_sqlite_errors
    def mark_running(self, run_id: str, env: dict[str, Any], *, fresh: bool, keep_through: int | None = None) -> None:
        """A run starts (or resumes); `fresh` (no checkpoint) drops metrics of earlier tries;
        a resume from the checkpoint of step `keep_through` drops the rows past that step
        (the killed try stored them; the resumed run emits them again)."""
        with self._conn:
            if fresh:
                self._conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            elif keep_through is not None:
                self._conn.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, int(keep_through)))
            self._conn.execute(
                f"UPDATE runs SET status = 'running', error = NULL, started_at = ?, "
                f"finished_at = NULL, attempts = attempts + 1, "
                f"{', '.join(f'{k} = ?' for k in ENV_KEYS)} WHERE run_id = ?",
                (time.time(), *(env.get(k) for k in ENV_KEYS), run_id),
            )

    @_sqlite_errors
    def add_metrics(self, run_id: str, rows: Iterable[tuple[int, int, str, float]]) -> None:
        """Store (step, epoch, name, value) rows; a re-emitted (name, step) replaces the old value."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO metrics(run_id, step, epoch, name, value) VALUES (?, ?, ?, ?, ?)",
                ((run_id, int(s), int(e), str(n), None if v is None else float(v)) for s, e, n, v in rows),
            )

    @_sqlite_errors
    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        final: dict[str, float] | None = None,
        steps: int | None = None,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record a run's end: finished / diverged (with final metrics) or failed (traceback)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._conn:
            self._conn.execute(
                "UPDATE runs SET status = ?, final_json = COALESCE(?, final_json), steps = ?, "
                "seconds = ?, error = ?, finished_at = ? WHERE run_id = ?",
                (
                    status,
                    None if final is None else json.dumps(final),
                    steps,
                    seconds,
                    error,
                    time.time() if status != "queued" else None,
                    run_id,
                ),
            )

    @_sqlite_errors
    def add_artifact(self, run_id: str, kind: str, path: str) -> None:
        """Record a file of a run (path relative to the results directory)."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO artifacts(run_id, kind, path, created_at) VALUES (?, ?, ?, ?)",
                (run_id, kind, path, time.time()),
            )

    # --- reading --------------------------------------------------------------------------

    @_sqlite_errors
    def experiments(self) -> list[str]:
        """Experiment names, oldest first."""
        rows = self._conn.execute("SELECT name FROM experiments ORDER BY created_at, name")
        return [r[0] for r in rows]

    @_sqlite_errors
    def _check_experiment(self, experiment: str) -> None:
        check_name(experiment)  # a hostile store's name must not become a path
        if not self._conn.execute("SELECT 1 FROM experiments WHERE name = ?", (experiment,)).fetchone():
            known = self.experiments()
            raise StoreError(
                f"no experiment {experiment!r} in {str(self.path)!r}; "
                f"known: {', '.join(known) if known else 'none yet'}"
            )

    @_sqlite_errors
    def run_rows(self, experiment: str) -> list[dict[str, Any]]:
        """One dict per (run, group) of an experiment, in plan order, config parsed."""
        self._check_experiment(experiment)
        cur = self._conn.execute(
            "SELECT r.*, m.grp AS grp FROM experiment_runs m JOIN runs r USING (run_id) "
            "WHERE m.experiment = ? ORDER BY m.position",
            (experiment,),
        )
        names = [d[0] for d in cur.description]
        rows = []
        for values in cur.fetchall():
            row = dict(zip(names, values))
            row["config"] = with_current_keys(json.loads(row.pop("config_json")))
            final = row.pop("final_json")
            row["final"] = json.loads(final) if final else {}
            rows.append(row)
        return rows

    @_sqlite_errors
    def data_fingerprints(self, run_ids: Sequence[str]) -> dict[str, str | None]:
        """run_id -> the data fingerprint stored with the run (None: not recorded)."""
        out = {}
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            out.update(
                self._conn.execute(f"SELECT run_id, data_fingerprint FROM runs WHERE run_id IN ({marks})", chunk)
            )
        return out

    @_sqlite_errors
    def run_status(self, run_ids: Sequence[str]) -> dict[str, str]:
        """run_id -> status for the given runs."""
        out = {}
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            out.update(self._conn.execute(f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})", chunk))
        return out

    @_sqlite_errors
    def final_metrics(self, run_id: str) -> dict[str, float]:
        row = self._conn.execute("SELECT final_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    @_sqlite_errors
    def status_counts(self, experiment: str) -> dict[str, int]:
        """{status: number of distinct runs} of an experiment."""
        rows = self._conn.execute(
            "SELECT r.status, COUNT(DISTINCT r.run_id) FROM experiment_runs m JOIN runs r USING (run_id) "
            "WHERE m.experiment = ? GROUP BY r.status",
            (experiment,),
        )
        return dict(rows.fetchall())

    @_sqlite_errors
    def runs_frame(self, experiment: str) -> pd.DataFrame:
        """One row per (run, group): run_id, experiment, status, group, started_at, finished_at,
        seconds, error, steps, then every resolved config key flattened with dots (`norm`,
        `optim.weight_decay`, ...), `final.<metric>` and `env.<key>` columns.

        A run that belongs to two groups appears twice (same run_id, different `group`).
        Times are unix seconds (UTC); `seconds` is the run's training wall time.
        """
        import pandas as pd

        head = ["run_id", "experiment", "status", "group", "started_at", "finished_at", "seconds", "error", "steps"]
        records = []
        for row in self.run_rows(experiment):
            record = {
                "run_id": row["run_id"],
                "experiment": experiment,
                "status": row["status"],
                "group": row["grp"],
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
                "seconds": row["seconds"],
                "error": row["error"],
                "steps": row["steps"],
            }
            record.update(flatten_config(row["config"]))
            record.update({f"final.{k}": v for k, v in row["final"].items()})
            record.update({f"env.{k}": row[k] for k in ENV_KEYS})
            records.append(record)
        frame = pd.DataFrame.from_records(records)
        return frame if records else pd.DataFrame(columns=head)

    @_sqlite_errors
    def metrics_frame(self, experiment: str, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Columns run_id, step, epoch, name, value for the runs of an experiment (each run once),
        sorted by run_id, name, step; `names` keeps only those metrics."""
        import pandas as pd

        self._check_experiment(experiment)
        query = (
            "SELECT run_id, step, epoch, name, value FROM metrics WHERE run_id IN "
            "(SELECT run_id FROM experiment_runs WHERE experiment = ?)"
        )
        params: list[Any] = [experiment]
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            query += f" AND name IN ({','.join('?' * len(names))})"
            params += names
        query += " ORDER BY run_id, name, step"
        rows = self._conn.execute(query, params).fetchall()
        frame = pd.DataFrame(rows, columns=["run_id", "step", "epoch", "name", "value"])
        return frame.astype({"step": "int64", "epoch": "int64", "value": "float64"})


__all__ = ["DB_NAME", "SCHEMA_VERSION", "STATUSES", "Store", "flatten_config"]
