"""liteq: a durable job and message queue in one SQLite file.

    import liteq
    db = liteq.connect("app.db")
    q = db.queue("emails", max_depth=10_000)
    q.put({"to": "a@b.c"})
    msg = q.get(wait=5)          # a Message, or None after 5 s without one
    if msg is not None:
        with msg:                # acks on success, nacks on an exception
            send(msg.payload)
"""

from .database import Database, connect, default_path
from .errors import (
    ConnectionLost,
    DatabaseBusy,
    InvalidArgument,
    LeaseLost,
    LiteqError,
    PayloadTooLarge,
    QueueFull,
    ScheduleError,
    SchemaError,
    SerializationError,
    StorageError,
)
from .hooks import Hook
from .queue import Backoff, Message, Queue
from .scheduler import (
    CommandFailed,
    Schedule,
    Scheduler,
    ScheduleRun,
    register_shell_task,
    run_shell,
)
from .task import (
    Cancelled,
    Fail,
    Job,
    JobCancelled,
    JobContext,
    JobError,
    JobFailed,
    JobInfo,
    JobNotFound,
    NoResult,
    Outcome,
    ResultTimeout,
    Retry,
    Task,
    TaskTimeout,
    current_job,
)
from .topic import Topic
from .version import VERSION
from .worker import Worker
from .workflow import Failed, GroupJob, Signature, chain, chord, group

__version__ = VERSION

__all__ = [
    # the database
    "connect",
    "Database",
    "default_path",
    # queues
    "Queue",
    "Message",
    "Backoff",
    # pub/sub
    "Topic",
    # tasks and workers
    "Task",
    "Job",
    "JobInfo",
    "JobError",
    "JobContext",
    "Outcome",
    "current_job",
    "Retry",
    "Fail",
    "Cancelled",
    "TaskTimeout",
    "JobNotFound",
    "JobFailed",
    "JobCancelled",
    "NoResult",
    "ResultTimeout",
    "Worker",
    "Hook",
    # workflows
    "Signature",
    "GroupJob",
    "Failed",
    "chain",
    "group",
    "chord",
    # schedules
    "Schedule",
    "ScheduleRun",
    "Scheduler",
    "CommandFailed",
    "run_shell",
    "register_shell_task",
    # errors
    "LiteqError",
    "InvalidArgument",
    "SerializationError",
    "PayloadTooLarge",
    "QueueFull",
    "LeaseLost",
    "SchemaError",
    "ScheduleError",
    "StorageError",
    "DatabaseBusy",
    "ConnectionLost",
]
