"""ProcessTransport: the subprocess transport of evpy's common case.

loop.subprocess_exec()/subprocess_shell() use it when the keyword
arguments are ones _core.spawn() (csrc/process.c) handles: executable,
close_fds, pass_fds, cwd, env, restore_signals, start_new_session,
process_group; anything else (preexec_fn, user, group, extra_groups,
umask, pipesize...), or a subprocess.Popen replaced by a test double, goes
through subprocess.Popen on the same loop (evpy/subprocess.py).

What it saves per child, against asyncio's _UnixSubprocessTransport: the
Popen object and its Python-level set-up, the _connect_pipes() task and
the connect_read_pipe()/connect_write_pipe() coroutines, the fstat and
fcntl calls on each pipe, and pidfd_open() (the pidfd comes with the
clone() that starts the child).  The pipe transports are built at once,
so the callbacks keep asyncio's order (each pipe protocol's
connection_made, then the protocol's connection_made, then data, pipe
losses, process_exited, and connection_lost after all of them).  The
per-child work (set-up and spawn, the pidfd reaper, asyncio's exit
bookkeeping, _wait, the pipe callbacks, close, the getters) is the C base
class _core.ProcessTransport (csrc/proctransport.c), which keeps asyncio's
BaseSubprocessTransport state under its attribute names; that class is a
base too, for its repr and the rest.  What is here is the cold paths the C
side calls.

get_extra_info('subprocess') is a subprocess.Popen as with asyncio, made
when first asked for (pid, args, returncode, the pipe file objects; its
poll(), wait(), kill() and send_signal() work on the child).
"""

import io
import logging
import os
import signal
import subprocess
import threading

from asyncio import base_subprocess

from . import _core
from .pipes import PipesMixin
from . import factories

logger = logging.getLogger('asyncio')

_spawn = getattr(_core, 'spawn', None)
_Popen = subprocess.Popen
_FileIO = io.FileIO
_get_exec_path = os.get_exec_path
_connect_read_pipe = PipesMixin.connect_read_pipe
_connect_write_pipe = PipesMixin.connect_write_pipe

# The Popen keyword arguments _core.spawn() does the same way.
_SPAWN_KWARGS = frozenset({
    'executable', 'close_fds', 'pass_fds', 'cwd', 'env', 'restore_signals',
    'start_new_session', 'process_group'})


# asyncio's BaseSubprocessTransport before gh-119710 (3.11 - 3.13.0) wakes
# _wait()'s futures once the pipes are closed too; since then (3.14, and
# where it was backported) as soon as the child exits, even while a
# grandchild holds a pipe open, and keeps them in a set.  The C transport
# does what this asyncio does.
_WAKE_AT_EXIT = (
    '_exit_waiters' in
    base_subprocess.BaseSubprocessTransport._process_exited.__code__.co_names)
_core._set_process_wake_at_exit(_WAKE_AT_EXIT)


def can_spawn(loop, kwargs):
    """True if _core.spawn() can start a child for these Popen keyword
    arguments.  Code that replaced subprocess.Popen, or the loop's
    connect_read_pipe()/connect_write_pipe() (asyncio's transport makes
    the child's pipes through them), expects its version to be called:
    then the Popen transport is used."""
    if (_spawn is None or subprocess.Popen is not _Popen
            or not _SPAWN_KWARGS.issuperset(kwargs)):
        return False
    d = loop.__dict__
    cls = type(loop)
    return ('connect_read_pipe' not in d and 'connect_write_pipe' not in d
            and cls.connect_read_pipe is _connect_read_pipe
            and cls.connect_write_pipe is _connect_write_pipe)


def _child_running(pid):
    """True while the child has not exited; never reaps it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False  # reaped by someone else
    return info is None


class ChildSignals:
    """send_signal/terminate/kill of evpy's two subprocess transports:
    nothing once the child has been reaped (its pid may belong to another
    process by then). The transport provides _check_proc(), _pid and
    _exit_known()."""

    __slots__ = ()

    def send_signal(self, signal):
        """Send a signal; nothing once the child has been reaped."""
        self._check_proc()
        if self._exit_known():
            return
        try:
            os.kill(self._pid, signal)
        except ProcessLookupError:
            pass

    def terminate(self):
        """Send SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self):
        """Send SIGKILL."""
        self.send_signal(signal.SIGKILL)


class ProcessTransport(ChildSignals, _core.ProcessTransport,
                       base_subprocess.BaseSubprocessTransport):
    """asyncio.SubprocessTransport over a child started by _core.spawn().

    ProcessTransport(loop, protocol, args, shell, stdin, stdout, stderr,
    kwargs, extra=None) starts the child (kwargs: the Popen keywords
    can_spawn() accepted); connection_made() and the pipes' are then
    scheduled (the caller yields once before using the protocol).  The C
    base class (csrc/proctransport.c) holds asyncio's state and does the
    per-child work; what is here is the cold paths it calls."""

    def _make_pipes(self, stdin_w, stdout_r, stderr_r):
        # The pipe transports over the parent's ends (-1: none), which are
        # this call's: closed here if it raises.
        loop = self._loop
        pipes = self._pipes
        ends = (stdin_w, stdout_r, stderr_r)
        for fd, end in enumerate(ends):
            if end < 0:
                continue
            try:
                if fd == 0:
                    proto = base_subprocess.WriteSubprocessPipeProto(self, 0)
                    proto.pipe = factories.adopt_pipe(
                        loop, _FileIO(end, 'wb'), end, proto, write=True)
                else:
                    proto = base_subprocess.ReadSubprocessPipeProto(self, fd)
                    proto.pipe = factories.adopt_pipe(
                        loop, _FileIO(end, 'rb'), end, proto, write=False)
            except BaseException:
                for later in ends[fd:]:
                    if later >= 0:
                        os.close(later)
                raise
            pipes[fd] = proto

    def _log_created(self):
        args = self._args
        program = (args if isinstance(args, (str, bytes, os.PathLike))
                   else args[0])
        logger.debug('process %r created: pid %s', program, self._pid)

    def _log_exited(self, returncode):
        logger.info('%r exited with return code %r', self, returncode)

    def _reaper_failed(self, loop, exc):
        # An unexpected error reaping the child (waitpid()): reported as
        # a failing reader callback would be; the pidfd is closed.
        loop.call_exception_handler({
            'message': f'Exception in the child reaper of {self!r}',
            'exception': exc,
            'transport': self,
        })

    def _reaped_elsewhere(self):
        """The return code of a child something else reaped
        (Popen.wait()): the Popen's, else 255 with a warning."""
        popen = self._popen
        if popen is not None and popen.returncode is not None:
            return popen.returncode
        logger.warning('child process pid %d exit status already read: '
                       'will report returncode 255', self._pid)
        return 255

    def _reap_with(self, waitpid):
        """The return code, from an os.waitpid that code replaced (the
        reaper calls this instead of waitpid() in C then), called as
        asyncio's child watcher calls it."""
        try:
            _, status = waitpid(self._pid, 0)
        except ChildProcessError:
            return self._reaped_elsewhere()
        return os.waitstatus_to_exitcode(status)

    # -- asyncio's `_proc`, made on demand ----------------------------------

    @property
    def _proc(self):
        return None if self._gone else self._make_popen()

    @_proc.setter
    def _proc(self, value):
        if value is None:
            self._gone = True
        else:
            self._popen = value
            self._gone = False

    def _make_popen(self):
        popen = self._popen
        if popen is None and self._pid is not None:
            popen = _Popen.__new__(_Popen)
            popen._waitpid_lock = threading.Lock()
            popen._input = None
            popen._communication_started = False
            popen.args = self._args
            pipes = self._pipes
            popen.stdin, popen.stdout, popen.stderr = (
                pipes[fd].pipe.get_extra_info('pipe') if fd in pipes
                else None for fd in (0, 1, 2))
            popen.pid = self._pid
            popen.returncode = (self._reaped if self._returncode is None
                                else self._returncode)
            popen.encoding = popen.errors = None
            popen.pipesize = -1
            popen.text_mode = None
            popen._sigint_wait_secs = 0.25
            popen._closed_child_pipe_fds = True
            popen._child_created = True
            self._popen = popen
            self._extra['subprocess'] = popen
        return popen

    def get_extra_info(self, name, default=None):
        """As asyncio's; 'subprocess' is a Popen made on first use."""
        if name == 'subprocess' and self._pid is not None:
            return self._make_popen()
        return self._extra.get(name, default)

    def _check_proc(self):
        if self._gone:
            raise ProcessLookupError()

    # -- reaping ------------------------------------------------------------

    def _exit_known(self):
        """True once the exit status has been read, here or through the
        Popen (the pid may belong to another process then)."""
        if self._reaped is not None or self._returncode is not None:
            return True
        popen = self._popen
        return popen is not None and popen.returncode is not None

    # -- closing and signals ------------------------------------------------

    def _kill_if_running(self):
        if (self._gone or self._pid is None or self._exit_known()
                or not _child_running(self._pid)):
            return
        if self._loop is not None and self._loop.get_debug():
            logger.warning('Close running child process: kill %r', self)
        try:
            popen = self._popen
            if popen is not None:
                popen.kill()  # as asyncio: code may have replaced it
            else:
                os.kill(self._pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

