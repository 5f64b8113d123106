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
losses, process_exited, and connection_lost after all of them); the
state machine after that (pipe data, exits, _wait, connection_lost) is
asyncio's BaseSubprocessTransport, inherited as is.

get_extra_info('subprocess') is a subprocess.Popen as with asyncio, made
when first asked for (pid, args, returncode, the pipe file objects; its
poll(), wait(), kill() and send_signal() work on the child).
"""

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings

from asyncio import base_subprocess

from . import _core
from ._compat import PY312 as _PY312, PY313 as _PY313
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


class ProcessTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio.SubprocessTransport over a child started by _core.spawn()."""

    _popen = None        # the Popen of get_extra_info('subprocess')
    _gone = False        # asyncio's `_proc is None`: connection lost
    _reaped = None       # the return code once this transport reaped it
    _pidfd = -1

    def __init__(self, loop, protocol, args, shell, stdin, stdout, stderr,
                 kwargs, extra=None):
        """Start the child; connection_made() and the pipes' are then
        scheduled (the caller yields once before using the protocol)."""
        self._extra = {} if extra is None else extra
        self._closed = False
        self._protocol = protocol
        self._loop = loop
        self._pid = None
        self._returncode = None
        self._exit_waiters = []
        self._pending_calls = None
        self._pipes = {}
        self._finished = False
        self._args = args  # Popen.args of the Popen made on demand
        try:
            # Popen._execute_child's argument handling, then _core.spawn().
            if isinstance(args, (str, bytes)):
                args = [args]
            elif isinstance(args, os.PathLike):
                if shell:
                    raise TypeError('path-like args is not allowed when '
                                    'shell is true')
                args = [args]
            else:
                args = list(args)
            if kwargs:
                self._start(args, shell, stdin, stdout, stderr, **kwargs)
            else:
                self._start(args, shell, stdin, stdout, stderr)
        except BaseException:
            self.close()
            raise
        if loop._debug:
            program = args[0]
            logger.debug('process %r created: pid %s', program, self._pid)
        loop.call_soon(protocol.connection_made, self)

    def _start(self, args, shell, stdin, stdout, stderr, executable=None,
               close_fds=True, pass_fds=(), cwd=None, env=None,
               restore_signals=True, start_new_session=False,
               process_group=None):
        if shell:
            args = ['/bin/sh', '-c'] + args
            if executable:
                args[0] = executable
        if executable is None:
            executable = args[0]
        if pass_fds and not close_fds:
            warnings.warn("pass_fds overriding close_fds.", RuntimeWarning)
            close_fds = True
        flags = ((1 if restore_signals else 0)
                 | (2 if start_new_session else 0))
        if stderr == subprocess.STDOUT and stdout is None:
            stderr = sys.__stdout__.fileno()
        names = (executable, cwd, None if _PY313 else cwd)
        pid, pidfd, stdin_w, stdout_r, stderr_r = _spawn(
            args, executable, env, cwd, stdin, stdout, stderr, close_fds,
            pass_fds, flags, -1 if process_group is None else process_group,
            names, _get_exec_path)
        self._pid = pid
        loop = self._loop
        try:
            if pidfd >= 0:
                self._pidfd = pidfd
                loop.add_reader(pidfd, self._pidfd_ready)
            else:
                loop._watch_child(self)  # Linux < 5.2
        except BaseException:
            for fd in (pidfd, stdin_w, stdout_r, stderr_r):
                if fd >= 0:
                    os.close(fd)
            self._pidfd = -1
            raise
        pipes = self._pipes
        for fd, end in ((0, stdin_w), (1, stdout_r), (2, stderr_r)):
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
                for later in (stdin_w, stdout_r, stderr_r)[fd:]:
                    if later >= 0:
                        os.close(later)
                raise
            pipes[fd] = proto

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

    def _pidfd_ready(self):
        loop = self._loop
        pidfd = self._pidfd
        self._pidfd = -1
        loop.remove_reader(pidfd)
        pid = self._pid
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            wpid, status = pid, None  # reaped elsewhere (Popen.wait())
        finally:
            os.close(pidfd)
        if wpid == 0:
            # Not reapable yet (cannot happen once the pidfd is readable,
            # but never spin on it): wait in a thread instead.
            loop._start_waitpid_thread(self, pid)
            return
        popen = self._popen
        if status is not None:
            returncode = os.waitstatus_to_exitcode(status)
        elif popen is not None and popen.returncode is not None:
            returncode = popen.returncode
        else:
            returncode = 255
            logger.warning('child process pid %d exit status already read: '
                           'will report returncode 255', pid)
        self._reaped = returncode
        if popen is not None and popen.returncode is None:
            popen.returncode = returncode
        if _PY312:
            loop.call_soon(self._process_exited, returncode)
        else:
            # asyncio 3.11 skips one loop iteration here.
            loop.call_soon(loop.call_soon, self._process_exited, returncode)

    def _process_exited(self, returncode):
        # asyncio's, with its _call() and _try_finish() inlined (nothing
        # is pending: connection_made() was scheduled at once).
        assert returncode is not None, returncode
        assert self._returncode is None, self._returncode
        loop = self._loop
        if loop.get_debug():
            logger.info('%r exited with return code %r', self, returncode)
        self._returncode = returncode
        popen = self._popen
        if popen is not None and popen.returncode is None:
            popen.returncode = returncode
        loop.call_soon(self._protocol.process_exited)
        assert not self._finished
        for proto in self._pipes.values():
            if not proto.disconnected:
                return
        self._finished = True
        loop.call_soon(self._call_connection_lost, None)

    # -- closing and signals ------------------------------------------------

    def close(self):
        """Close the pipes and kill the child if it is still running."""
        if self._closed:
            return
        self._closed = True
        try:
            for proto in self._pipes.values():
                proto.pipe.close()
        finally:
            if self._returncode is None and self._reaped is None:
                self._kill_if_running()

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

    def send_signal(self, signal):
        """Send a signal; nothing once the child has been reaped."""
        self._check_proc()
        if self._exit_known():
            return  # reaped: the pid may belong to another process now
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

    def __del__(self, _warn=warnings.warn):
        try:
            if not self._closed:
                _warn(f"unclosed transport {self!r}", ResourceWarning,
                      source=self)
                self.close()
        finally:
            if self._pidfd >= 0:
                # Collected unreaped: the loop (and its reader) went first.
                os.close(self._pidfd)
                self._pidfd = -1
