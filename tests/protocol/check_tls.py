#!/usr/bin/env python3
"""Mutual TLS and the authorisation of control calls, checked by an
independent client: Python `grpcio` (its own TLS stack, BoringSSL), with
certificates made by the `openssl` command line and stubs generated at run
time from `proto/proto/streamfuse/v1/stage.proto`, sharing no code with
the server.

Starts `streamfuse serve` for the conv segment of the thesis pipeline
(placement ESSS, segment 1) with `--tls-cert/--tls-key/--tls-ca`, `--admin
ops` and `--health-listen`, and checks:

1. a plaintext client gets no answer to `Info` (UNAVAILABLE);
2. a client whose certificate another CA signed gets none either;
3. a client of the CA that is not an admin (CN viewer) is answered `Info`,
   and its `UpdateWeights` and `Probe` get PERMISSION_DENIED naming it;
4. the admin (CN ops) gets its `UpdateWeights` admitted: the server then
   judges the weights (the wrong shape here: INVALID_ARGUMENT naming the
   shape the stage needs; nothing changes);
5. the plaintext health port answers `grpc.health.v1.Health/Check`
   SERVING (what the kubelet's probe asks).

Prints one line per check and a closing count; exits non-zero on any
failure. Uses the same pinned packages as check_stream_protocol.py
(.venv/grpc).

    python3 tests/protocol/check_tls.py [--binary target/ci/streamfuse]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_stream_protocol import ROOT, ensure_venv, free_port, load_stubs  # noqa: E402


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certs(d: Path) -> None:
    """ca.{crt,key}, other-ca.{crt,key}; node (127.0.0.1), ops, viewer
    signed by ca; rogue (CN ops) signed by other-ca."""
    ext = d / "ext.cnf"
    ext.write_text("[node]\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   "[client]\nextendedKeyUsage=clientAuth\n")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}", cwd=d)
    for name, cn, ca, section in (("node", "segment", "ca", "node"), ("ops", "ops", "ca", "client"),
                                  ("viewer", "viewer", "ca", "client"),
                                  ("rogue", "ops", "other-ca", "client")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext),
                "-extensions", section, cwd=d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "ci" / "streamfuse")
    args = ap.parse_args()
    ensure_venv(__file__)
    import grpc

    failures = 0

    def report(name: str, problem: str | None, what: str) -> None:
        nonlocal failures
        if problem:
            failures += 1
            print(f"FAIL {name}: {problem}")
        else:
            print(f"ok   {name}: {what}")

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_certs(d)
        (d / "stubs").mkdir()
        pb, pb_grpc = load_stubs(d / "stubs")
        port, health = free_port(), free_port()
        log = open(d / "serve.log", "w")
        cmd = [str(args.binary), "serve", str(ROOT / "examples" / "thesis.yaml"), "--size", "64x48",
               "--placement", "ESSS", "--segment", "1", "--listen", f"127.0.0.1:{port}",
               "--tls-cert", str(d / "node.crt"), "--tls-key", str(d / "node.key"),
               "--tls-ca", str(d / "ca.crt"), "--admin", "ops",
               "--health-listen", f"127.0.0.1:{health}"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "RUST_LOG": "warn"})
        try:
            def secure(cert: str, ca: str = "ca"):
                creds = grpc.ssl_channel_credentials(
                    root_certificates=(d / f"{ca}.crt").read_bytes(),
                    private_key=(d / f"{cert}.key").read_bytes(),
                    certificate_chain=(d / f"{cert}.crt").read_bytes())
                return pb_grpc.StageStub(grpc.secure_channel(f"127.0.0.1:{port}", creds))

            def code(call) -> tuple[str, str]:
                try:
                    call()
                    return "OK", ""
                except grpc.RpcError as e:
                    return e.code().name, e.details() or ""

            info = lambda stub: code(lambda: stub.Info(pb.InfoRequest(), timeout=3))  # noqa: E731
            deadline = time.monotonic() + 30
            while info(secure("ops"))[0] != "OK":
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the TLS server did not answer Info: {' '.join(cmd)}")
                time.sleep(0.2)

            plain = pb_grpc.StageStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            got = info(plain)
            report("plaintext", None if got[0] == "UNAVAILABLE" else f"Info answered {got}",
                   "a plaintext client gets no answer (UNAVAILABLE)")
            got = info(secure("rogue"))
            report("unknown CA", None if got[0] == "UNAVAILABLE" else f"Info answered {got}",
                   "a certificate of another CA gets no answer (UNAVAILABLE)")

            weights = pb.UpdateWeightsRequest(stage="conv", shape=[1, 1, 1, 1],
                                              weights=b"\x00\x00\x00\x3f")
            viewer = secure("viewer")
            got_info = info(viewer)
            got_up = code(lambda: viewer.UpdateWeights(weights, timeout=5))
            got_probe = code(lambda: viewer.Probe(iter(()), timeout=5))
            problem = None
            if got_info[0] != "OK":
                problem = f"Info: {got_info}"
            for what, (c, msg) in (("UpdateWeights", got_up), ("Probe", got_probe)):
                if c != "PERMISSION_DENIED" or "CN=viewer" not in msg:
                    problem = f"{what}: {c} {msg!r}"
            report("non-admin", problem, "a verified non-admin reads Info; UpdateWeights and "
                                         "Probe get PERMISSION_DENIED naming CN=viewer")

            c, msg = code(lambda: secure("ops").UpdateWeights(weights, timeout=15))
            report("admin", None if c == "INVALID_ARGUMENT" and "the stage needs" in msg else f"{c} {msg!r}",
                   "the admin's UpdateWeights is admitted, then refused for its shape")

            check = grpc.insecure_channel(f"127.0.0.1:{health}").unary_unary(
                "/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                response_deserializer=lambda b: b)
            try:
                # HealthCheckRequest{service: ""} is empty; SERVING is field 1 = 1.
                reply = check(b"", timeout=5)
                problem = None if reply == b"\x08\x01" else f"answered {reply!r}"
            except grpc.RpcError as e:
                problem = f"{e.code().name}: {e.details()}"
            report("health", problem, "the plaintext health port answers Check: SERVING")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            if failures:
                print((d / "serve.log").read_text())
    print(f"{5 - failures} of 5 TLS checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
