"""Process entry for the llama.cpp backend: `python -m sdg.teacher.llamacpp_main --model F.gguf ...`.

xllamacpp embeds llama.cpp's server in-process; running it in a child process of its own lets the
server base class treat every backend alike (one process group to signal, one log, one exit code).
It prints `SDG_LISTENING <url>` once the socket is bound (port 0 = the OS picks a free one).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sdg.teacher.llamacpp_main")
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--alias", action="append", default=[])
    ap.add_argument("--api-key-env", default="", help="name of the env var holding the API key")
    ap.add_argument("--chat-template-file", default="", help="a Jinja chat template (default: the GGUF's own)")
    args = ap.parse_args(argv)

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx * args.parallel  # llama.cpp shares n_ctx across slots
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_gpu_layers = args.gpu_layers
    params.endpoint_metrics = True  # /metrics: requests and tokens per server (behind the API key when set)
    params.hostnames = [args.host]
    params.port = args.port
    if args.alias:
        params.model_alias = set(args.alias)
    if args.chat_template_file:
        params.use_jinja = True
        with open(args.chat_template_file, encoding="utf-8") as f:
            params.chat_template = f.read()  # the template's text, as llama-server's --chat-template-file does
    key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
    if key:
        params.api_keys = [key]

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xlc.Server(params)
    except RuntimeError as exc:  # llama.cpp has logged why (bind failure, bad model) just above
        print(f"llama.cpp server failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    # One write(2) for the whole line, newline included: llama.cpp's C logger writes to the same file from
    # its own threads, and print() may issue the text and its newline as two writes (unbuffered stdout),
    # which let a log line land between them (seen in CI: "...:35919" + "0.00.804.128 I srv ...").
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"SDG_LISTENING {server.listening_address}\n".encode())
    stop.wait()
    # Exit at once: tearing the llama.cpp server down can block on its threads (seen in CI: a SIGTERM that
    # arrived while the model loaded left the process hanging at exit for minutes, an orphan on the node).
    # Nothing is left to save; the kernel frees the port and memory.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
