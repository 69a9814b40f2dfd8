"""shell: run a command and record its exit code and the tail of its output.

``cmd`` is a string (run by ``/bin/sh``) or an argv list (run directly); ``cwd`` and ``env``
are optional. The command runs in its own process group with DTF_TASK_ID, DTF_ATTEMPT and
DTF_WORKER_ID set; a non-zero exit fails the task.
"""

from __future__ import annotations

from typing import Any

from dtf_bus.plugins import TaskContext, TaskFailed, run_process


class ShellExecutor:
    name = "shell"

    def run(self, ctx: TaskContext) -> dict[str, Any]:
        cmd = ctx.params.get("cmd")
        if isinstance(cmd, list):
            if not cmd or not all(isinstance(a, str) for a in cmd):
                raise TaskFailed("shell: param 'cmd' as a list must be non-empty strings")
        elif not isinstance(cmd, str) or not cmd.strip():
            raise TaskFailed("shell: param 'cmd' is required (a string or an argv list)")
        cwd = ctx.params.get("cwd")
        env = ctx.params.get("env") or {}
        if cwd is not None and not isinstance(cwd, str):
            raise TaskFailed("shell: param 'cwd' must be a string")
        if not isinstance(env, dict):
            raise TaskFailed("shell: param 'env' must be a table of strings")
        try:
            proc = run_process(ctx, cmd, cwd=cwd, env={str(k): str(v) for k, v in env.items()})
        except OSError as exc:  # missing executable, bad cwd
            raise TaskFailed(f"shell: cannot start {cmd!r}: {exc}") from None
        result = {
            "exit_code": proc.returncode,
            "stdout": proc.stdout,
            "stderr": proc.stderr,
            "duration_s": round(proc.duration, 6),
        }
        if proc.returncode != 0 and not proc.killed:
            raise TaskFailed(f"exit code {proc.returncode}", result)
        return result
