"""Names of the engine's state tables that the no-change memo's replay reads with plain
sqlite3 (engine/memo.py), so they are known without importing SQLModel."""

MEMO_TABLE = "memos"  # MemoRecord (state/tables.py)
LOCK_TABLE = "locks"  # LockRecord: a replayed reconcile must not pass a lock by
