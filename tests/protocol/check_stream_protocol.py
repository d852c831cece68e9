#!/usr/bin/env python3
"""End-to-end check of the segment server's `Push` protocol by an
independent client: Python `grpcio`, with stubs generated at run time from
`proto/proto/streamfuse/v1/stage.proto` and written from that file's header
comments alone (the protocol's rules), sharing no code with the server or
its Rust client. What this client does is what any third party reading the
.proto would do, so a server that only works with its own client fails here.

Starts `streamfuse serve` for the last segment of the thesis pipeline
(ReLU + max-pool and a stats sink), asks `Info` for the input shape and
`max_frame_bytes`, and checks on one server, each stream its own id:

1. a good stream (seq 0..9, first_unacked following the acks, half-close):
   its last Ack is the only `final` one and reports next_seq 10, and the
   call ends OK; a stream ended by an end-of-stream marker is acked to
   frames + 1;
2. a new stream starting at seq 5 is refused (INVALID_ARGUMENT naming
   "frame seq 5"), and the same stream started at 0 on a new call is taken;
3. an empty shape and a zero-sized dimension: INVALID_ARGUMENT;
4. a frame of about 4x max_frame_bytes: RESOURCE_EXHAUSTED naming
   "frame seq N (stream S)" (grpcio's own send limit is lifted, so the
   server refuses it, not the client library);
5. dtype U8 and a wrong payload length: INVALID_ARGUMENT;
6. a repeated seq and a gap within a call: INVALID_ARGUMENT;
7. a frame without `protocol` (an old client): FAILED_PRECONDITION;
8. every refusal sends a last Ack with `final = true` before its status;
9. after all of these, a fresh stream of 200 frames (more than the first
   credit, so the client waits on the acks' credit) loses nothing, and the
   frames taken before each refusal stand (the first Ack of a new call
   reports them);
10. a replay (0..4, then 0..7 on a new call with first_unacked 0): the
    duplicates are dropped, the stream is acked to 8, the call ends OK;
11. the control calls (UpdateWeights, Probe), which the server was not
    started to accept (no `--control`): PERMISSION_DENIED with a reason.

The client sends nothing before the first Ack and never more frames on a
call than the latest `credit_total`. Every refused frame but check 2's
comes after a few good ones on its stream, so "the frames taken before a
refusal stand" is checked too. Prints one line per check and a closing
count; exits non-zero on any failure, including anything that cannot run
(no binary, no server, no stubs). Installs its packages into .venv/grpc
(pinned) and re-executes itself there.

    python3 tests/protocol/check_stream_protocol.py [--binary target/ci/streamfuse]
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "grpc"
PINS = ["grpcio==1.85.1", "grpcio-tools==1.85.1", "protobuf==7.36.2", "numpy==2.4.6"]
PROTO_ROOT = ROOT / "proto" / "proto"
PROTO = PROTO_ROOT / "streamfuse" / "v1" / "stage.proto"
PROTOCOL = 2
GOOD_AFTER = 200  # frames of check 9: more than a first credit, so the sender waits on acks
WAIT = 30.0  # seconds for an ack or a call's end (the server waits up to 10 s itself)


def ensure_venv(script: str = __file__) -> None:
    """Re-executes `script` (this one by default) inside .venv/grpc,
    installing the pins first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".pins"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


def load_stubs(out: Path):
    """Generates the Python stubs of stage.proto into `out` and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO)])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} (exit {rc})")
    sys.path.insert(0, str(out))
    from streamfuse.v1 import stage_pb2, stage_pb2_grpc

    return stage_pb2, stage_pb2_grpc


class CallStalled(Exception):
    """A check could not go on (the server ended or stalled a call)."""


class Push:
    """One Push call: frames go in through a queue (None half-closes), a
    thread collects the acks and the call's final status."""

    def __init__(self, stub):
        self.q: queue.Queue = queue.Queue()
        self.acks: list = []
        self.cond = threading.Condition()
        self.code = None  # grpc.StatusCode once the call has ended
        self.details = ""
        self.sent = 0
        self.call = stub.Push(self._requests(), timeout=3 * WAIT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _requests(self):
        while (frame := self.q.get()) is not None:
            yield frame

    def _read(self) -> None:
        import grpc

        try:
            for ack in self.call:
                with self.cond:
                    self.acks.append(ack)
                    self.cond.notify_all()
            code, details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        with self.cond:
            self.code, self.details = code, details or ""
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = WAIT) -> bool:
        """Waits until `pred()` holds or the call has ended; returns `pred()`."""
        with self.cond:
            self.cond.wait_for(lambda: self.code is not None or pred(), timeout)
            return pred()

    def position(self, stream: int, acks=None) -> int | None:
        """The stream's latest acknowledged next_seq (None: never acked)."""
        for ack in reversed(self.acks if acks is None else acks):
            for s in ack.streams:
                if s.stream_id == stream:
                    return s.next_seq
        return None

    def send(self, frame) -> None:
        """Sends once the first Ack has come and the credit allows one more."""
        if not self.wait_for(lambda: bool(self.acks) and self.acks[-1].credit_total > self.sent):
            if self.code is not None:
                raise CallStalled(f"call ended ({self.code.name}: {self.details}) before seq {frame.seq} "
                                  f"of stream {frame.stream_id} could be sent")
            raise CallStalled(f"no ack/credit within {WAIT:.0f} s for seq {frame.seq} of stream "
                              f"{frame.stream_id} ({self.sent} sent, acks {self.acks[-1:] or 'none'})")
        self.sent += 1
        self.q.put(frame)

    def finish(self, half_close: bool = True) -> None:
        """Half-closes (or not) and waits for the call's end."""
        if half_close:
            self.q.put(None)
        ended = self.wait_for(lambda: self.code is not None)
        self.q.put(None)  # releases the request iterator either way
        if not ended:
            self.call.cancel()
            raise CallStalled(f"the call did not end within {WAIT:.0f} s "
                              f"({'after a half-close' if half_close else 'without a half-close'})")

    def final_last(self) -> str | None:
        """Why the acks do not end with one `final` Ack (None: they do)."""
        finals = [i for i, a in enumerate(self.acks) if a.final]
        if not finals:
            return f"no Ack with final=true among {len(self.acks)} acks"
        if finals != [len(self.acks) - 1]:
            return f"final=true at acks {finals} of {len(self.acks)} (must be the last one only)"
        return None


class Checker:
    """The checks against one server, and their tally."""

    def __init__(self, pb, stub, shape, max_frame_bytes: int):
        import numpy as np

        self.pb, self.stub, self.shape, self.max_frame_bytes = pb, stub, list(shape), max_frame_bytes
        self.values = int(np.prod(shape))
        self.rng = np.random.default_rng(20261204)
        self.passed = self.failed = 0
        self.refusals: list[tuple[str, Push]] = []  # for check 8
        self.taken_before_refusal: dict[int, int] = {}  # stream -> good frames sent before its refusal

    def report(self, name: str, problem: str | None, what: str) -> None:
        ok = problem is None
        self.passed += ok
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {what if ok else problem}", flush=True)

    def run(self, name: str, f) -> None:
        """Runs one check; an exception is a failure of that check."""
        try:
            problem, what = f()
        except CallStalled as e:
            problem, what = str(e), ""
        except Exception:
            problem, what = "check raised:\n" + traceback.format_exc(), ""
        self.report(name, problem, what)

    def frame(self, stream: int, seq: int, first_unacked: int = 0, **over):
        now = time.time_ns()
        payload = self.rng.standard_normal(self.values, dtype="float32").astype("<f4").tobytes()
        fields = dict(stream_id=stream, seq=seq, protocol=PROTOCOL, first_unacked=first_unacked,
                      capture_ns=now, sent_ns=now, shape=self.shape, dtype=self.pb.DTYPE_F32, payload=payload)
        fields.update(over)
        return self.pb.Frame(**fields)

    def send_good(self, call: Push, stream: int, seqs, first_unacked: int | None = None) -> None:
        """Sends good frames; first_unacked follows the acks unless given."""
        for seq in seqs:
            fu = first_unacked if first_unacked is not None else min(seq, call.position(stream) or 0)
            call.send(self.frame(stream, seq, fu))

    def good_stream(self, stream: int, seqs, eos_at: int | None = None, first_unacked=None) -> Push:
        call = Push(self.stub)
        self.send_good(call, stream, seqs, first_unacked)
        if eos_at is not None:
            fu = min(eos_at, call.position(stream) or 0)
            call.send(self.pb.Frame(stream_id=stream, seq=eos_at, protocol=PROTOCOL, first_unacked=fu,
                                    end_of_stream=True))
        call.finish()
        return call

    @staticmethod
    def ended_ok(call: Push, stream: int, want: int) -> str | None:
        """Why a good call did not end as rule 7 says (None: it did)."""
        if call.code is None or call.code.name != "OK":
            return f"call ended {call.code.name if call.code else 'never'} ({call.details!r}), expected OK"
        if (why := call.final_last()) is not None:
            return why
        got = call.position(stream, call.acks[-1:])
        if got != want:
            return f"the final Ack reports stream {stream} at next_seq {got}, expected {want}"
        return None

    def refusal(self, name: str, stream: int, good: int, bad, code: str, names: str | None) -> tuple:
        """`good` frames then `bad` on a new stream: the call must end with
        `code`, its details containing `names`."""
        call = Push(self.stub)
        self.send_good(call, stream, range(good))
        call.send(bad)
        call.finish(half_close=False)
        self.refusals.append((name, call))
        self.taken_before_refusal[stream] = good
        got = call.code.name if call.code else "nothing"
        if got != code:
            return f"expected {code}, got {got} ({call.details!r})", ""
        if names is not None and names not in call.details:
            return f"{code} as expected, but its details {call.details!r} do not name {names!r}", ""
        return None, f"{code}: {call.details!r}"

    # The checks, in order.

    def check_good(self):
        call = self.good_stream(1, range(10))
        if (why := self.ended_ok(call, 1, 10)) is not None:
            return why, ""
        return None, f"10 frames acked to next_seq 10 over {len(call.acks)} acks, last one final, OK"

    def check_end_of_stream(self):
        call = self.good_stream(2, range(4), eos_at=4)
        if (why := self.ended_ok(call, 2, 5)) is not None:
            return why, ""
        return None, "4 frames + end_of_stream (seq 4) acked to next_seq 5, last Ack final, OK"

    def check_late_start(self):
        problem, what = self.refusal("late start", 3, 0, self.frame(3, 5, 0), "INVALID_ARGUMENT", "frame seq 5")
        if problem is not None:
            return problem, ""
        self.taken_before_refusal.pop(3)
        call = self.good_stream(3, range(6))
        if (why := self.ended_ok(call, 3, 6)) is not None:
            return f"after the refusal ({what}), a new call from seq 0: {why}", ""
        return None, f"{what}; then seq 0..5 on a new call acked to 6, OK"

    def check_shape(self, stream: int, shape: list[int]):
        fields = dict(shape=shape, payload=b"")
        return self.refusal(f"shape {shape}", stream, 2, self.frame(stream, 2, 0, **fields),
                            "INVALID_ARGUMENT", "frame seq 2")

    def check_oversized(self):
        size = 4 * self.max_frame_bytes
        bad = self.frame(8, 3, 0, payload=bytes(size))
        problem, what = self.refusal("oversized", 8, 3, bad, "RESOURCE_EXHAUSTED", "frame seq 3 (stream 8)")
        return problem, what and f"{size} byte payload (max_frame_bytes {self.max_frame_bytes}): {what}"

    def check_u8(self):
        bad = self.frame(9, 2, 0, dtype=self.pb.DTYPE_U8, payload=bytes(self.values))
        return self.refusal("dtype U8", 9, 2, bad, "INVALID_ARGUMENT", "frame seq 2")

    def check_payload_length(self):
        bad = self.frame(10, 2, 0)
        bad.payload = bad.payload[:-4]
        return self.refusal("payload length", 10, 2, bad, "INVALID_ARGUMENT", None)

    def check_repeat(self):
        return self.refusal("repeated seq", 11, 2, self.frame(11, 1, 0), "INVALID_ARGUMENT", "frame seq 1")

    def check_gap(self):
        return self.refusal("gap", 12, 1, self.frame(12, 2, 0), "INVALID_ARGUMENT", "frame seq 2")

    def check_old_client(self):
        bad = self.frame(13, 2, 0, protocol=0)
        return self.refusal("protocol 0", 13, 2, bad, "FAILED_PRECONDITION", "protocol")

    def check_final_before_error(self):
        bad = [f"{name} ({why})" for name, call in self.refusals if (why := call.final_last()) is not None]
        if not self.refusals:
            return "no refusal case ran", ""
        if bad:
            return "refusals without a last final Ack before the status: " + "; ".join(bad), ""
        return None, f"all {len(self.refusals)} refused calls sent a last Ack with final=true before the status"

    def check_after_refusals(self):
        call = self.good_stream(14, range(GOOD_AFTER))
        if (why := self.ended_ok(call, 14, GOOD_AFTER)) is not None:
            return why, ""
        return None, (f"a fresh stream's {GOOD_AFTER} frames (first credit {call.acks[0].credit_total}) "
                      f"acked to next_seq {GOOD_AFTER}, last Ack final, OK")

    def check_refusals_kept(self):
        call = Push(self.stub)
        if not call.wait_for(lambda: bool(call.acks)):
            call.finish()
            return f"no first Ack ({call.code.name if call.code else 'none'}: {call.details!r})", ""
        first = call.acks[:1]
        call.finish()
        wrong = [f"stream {s}: {call.position(s, first)} (expected {n})"
                 for s, n in sorted(self.taken_before_refusal.items()) if call.position(s, first) != n]
        if wrong:
            return "the first Ack of a new call does not report the frames taken before each refusal: " + \
                   "; ".join(wrong), ""
        kept = ", ".join(f"{s}:{n}" for s, n in sorted(self.taken_before_refusal.items()))
        return None, f"a new call's first Ack reports every refused stream at its good frames ({kept})"

    def check_control_refused(self):
        """UpdateWeights and Probe to a server started without `--control`
        (the default): PERMISSION_DENIED with a reason, from loopback too."""
        import grpc  # noqa: PLC0415

        problems = []
        calls = [
            ("UpdateWeights", lambda: self.stub.UpdateWeights(
                self.pb.UpdateWeightsRequest(stage="conv", shape=[1, 1, 1, 1],
                                             weights=b"\x00\x00\x00\x3f"), timeout=WAIT)),
            ("Probe", lambda: self.stub.Probe(iter([self.frame(90, 0)]), timeout=WAIT)),
        ]
        for name, call in calls:
            try:
                call()
                problems.append(f"{name} was accepted")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.PERMISSION_DENIED or "control calls are off" not in (e.details() or ""):
                    problems.append(f"{name}: {e.code()} {e.details()!r}")
        return ("; ".join(problems) or None,
                "UpdateWeights and Probe refused with PERMISSION_DENIED (control calls are off)")

    def check_replay(self):
        first = self.good_stream(15, range(5))
        if (why := self.ended_ok(first, 15, 5)) is not None:
            return f"first call (seq 0..4): {why}", ""
        call = Push(self.stub)
        if not call.wait_for(lambda: bool(call.acks)):
            call.finish()
            return "no first Ack on the replay call", ""
        reported = call.position(15, call.acks[:1])
        self.send_good(call, 15, range(8), first_unacked=0)
        call.finish()
        if reported != 5:
            return f"the replay call's first Ack reports stream 15 at {reported}, expected 5", ""
        if (why := self.ended_ok(call, 15, 8)) is not None:
            return f"replay call (seq 0..7, first_unacked 0): {why}", ""
        return None, "0..4 acked to 5; a new call's first Ack reports 5; 0..7 re-sent: acked to 8, OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: Path, log, pb, pb_grpc):
    """Starts the segment server; returns (process, channel, stub, info)."""
    import grpc

    port = free_port()
    cmd = [str(binary), "serve", str(ROOT / "examples" / "thesis.yaml"), "--size", "64x48", "--fusion", "chain",
           "--placement", "EESS", "--segment", "1", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": "error"})
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    stub = pb_grpc.StageStub(channel)
    deadline, last = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`{' '.join(cmd)}` exited with {proc.returncode} before answering Info")
        try:
            return proc, channel, stub, stub.Info(pb.InfoRequest(), timeout=2)
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
            time.sleep(0.2)
    raise RuntimeError(f"`{' '.join(cmd)}`: Info did not answer within 20 s (last: {last})")


def main() -> None:
    if sys.argv[1:] == ["--setup-only"]:
        # Only the venv (the test command makes it while it compiles):
        # outside it, ensure_venv installs it and runs this again inside.
        ensure_venv()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "ci" / "streamfuse")
    args = ap.parse_args()
    ensure_venv()
    binary = args.binary.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        proc = channel = None
        failed = True
        try:
            if not binary.is_file():
                raise RuntimeError(f"no streamfuse binary at {binary}")
            (Path(tmp) / "stubs").mkdir()
            pb, pb_grpc = load_stubs(Path(tmp) / "stubs")
            with open(log_path, "wb") as log:
                proc, channel, stub, info = start_server(binary, log, pb, pb_grpc)
            shape, max_bytes = list(info.input_shape), info.max_frame_bytes
            if len(shape) != 3 or 0 in shape or max_bytes == 0:
                raise RuntimeError(f"Info: input_shape {shape}, max_frame_bytes {max_bytes}: cannot build frames")
            print(f"server: segment {info.segment + 1} of {info.segments} of {info.pipeline!r}, stages "
                  f"{list(info.stages)}, input_shape {shape}, max_frame_bytes {max_bytes}", flush=True)
            c = Checker(pb, stub, shape, max_bytes)
            c.run("1 good stream", c.check_good)
            c.run("1 end-of-stream marker", c.check_end_of_stream)
            c.run("2 new stream at seq 5, then from 0", c.check_late_start)
            c.run("3 empty shape", lambda: c.check_shape(4, []))
            c.run("3 zero-sized dimension", lambda: c.check_shape(5, [shape[0], 0, shape[2]]))
            c.run("4 oversized frame", c.check_oversized)
            c.run("5 dtype U8", c.check_u8)
            c.run("5 wrong payload length", c.check_payload_length)
            c.run("6 repeated seq within a call (0,1,1)", c.check_repeat)
            c.run("6 gap within a call (0,2)", c.check_gap)
            c.run("7 frame without protocol", c.check_old_client)
            c.run("8 final Ack before a refusal's status", c.check_final_before_error)
            c.run("9 good stream after the refusals", c.check_after_refusals)
            c.run("9 frames taken before each refusal stand", c.check_refusals_kept)
            c.run("10 replay with duplicates", c.check_replay)
            c.run("11 control calls refused by default", c.check_control_refused)
            if proc.poll() is not None:
                c.report("server", f"exited with {proc.returncode} during the checks", "")
            print(f"{c.passed} passed, {c.failed} failed", flush=True)
            failed = c.failed > 0
        except Exception as e:
            print(f"FAIL setup: {e}", flush=True)
        finally:
            if channel is not None:
                channel.close()
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if failed:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            print(f"--- server log ({log_path.name}) ---\n{log.strip() or '(empty)'}\n--- end of server log ---")
            sys.exit("stream protocol check failed")
    print("the Push protocol holds against a client written from stage.proto alone")


if __name__ == "__main__":
    main()
