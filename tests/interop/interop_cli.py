"""Command-line entry points of the Python side of the interop tests (tests/interop.rs runs them).

Every command prints one JSON document on stdout (`serve` prints one per line) and exits 0 when the protocol
answered, whatever it answered: errors of the protocol come out as {"ok": false, "error": {"kind": ...}}.

    interop_cli.py --url URL --service S request FN PARAMS_JSON --id ID [--timeout-ms MS]
    interop_cli.py --url URL --service S call-info ID
    interop_cli.py --url URL --service S reply ID DATA_JSON [--error-code CODE]   (DATA_JSON is then the message)
    interop_cli.py --url URL --service S serve [--group G] [--consumer C] [--max-seconds N]
"""

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import redcall_py as rc  # noqa: E402


def emit(value):
    def default(obj):
        if isinstance(obj, bytes):
            return {"bin_hex": obj.hex()}
        raise TypeError(f"not JSON: {type(obj).__name__}")

    sys.stdout.write(json.dumps(value, default=default, sort_keys=True) + "\n")
    sys.stdout.flush()


# The Python responder's handlers, used by tests/interop.rs.
def h_echo(params):
    return params


def h_greet(params):
    if not isinstance(params, dict) or not isinstance(params.get("name"), str) or type(params.get("times")) is not int:
        raise rc.InvalidParams(f"greet takes {{name: str, times: int}}, got {params!r}")
    name, times = params["name"], params["times"]
    return {"greeting": f"hello {name}", "repeated": [name] * times, "name_len": len(name), "by": "python"}


def h_double(params):
    if type(params) is not int:
        raise rc.InvalidParams(f"double takes an integer, got {params!r}")
    return params * 2


def h_fail(_params):
    raise rc.HandlerError("the python handler fails on purpose", code="py_failure")


def h_fail_plain(_params):
    raise rc.HandlerError("failed without a code")


HANDLERS = {"echo": h_echo, "greet": h_greet, "double": h_double, "fail": h_fail, "fail_plain": h_fail_plain}


def cmd_request(args):
    requester = rc.Requester(args.url, args.service, args.namespace)
    try:
        reply = requester.request(args.id, args.func, json.loads(args.params), args.timeout_ms)
        emit({"ok": True, "id": args.id, "reply": reply})
    except rc.RedcallError as e:
        emit({"ok": False, "id": args.id, "error": e.to_json()})


def cmd_call_info(args):
    requester = rc.Requester(args.url, args.service, args.namespace)
    try:
        emit({"ok": True, "info": requester.call_info(args.id)})
    except rc.RedcallError as e:
        emit({"ok": False, "error": e.to_json()})


def cmd_reply(args):
    requester = rc.Requester(args.url, args.service, args.namespace)
    try:
        if args.error_code is not None:
            requester.publish_error(args.id, args.error_code, json.loads(args.data))
        else:
            requester.publish_reply(args.id, json.loads(args.data))
        emit({"ok": True, "id": args.id})
    except rc.RedcallError as e:
        emit({"ok": False, "error": e.to_json()})


def cmd_serve(args):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    end = time.monotonic() + args.max_seconds
    responder = rc.Responder(args.url, args.service, HANDLERS, namespace=args.namespace, group=args.group,
                             consumer=args.consumer, on_outcome=lambda o: emit({"outcome": o}))
    responder.ensure_group()
    emit({"ready": True, "group": args.group, "consumer": args.consumer, "handlers": sorted(HANDLERS)})
    responder.run(until=lambda: bool(stop) or time.monotonic() >= end)
    emit({"stopped": stop[0] if stop else "max-seconds"})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--namespace", default=rc.DEFAULT_NAMESPACE)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("request")
    r.add_argument("func")
    r.add_argument("params")
    r.add_argument("--id", required=True)
    r.add_argument("--timeout-ms", type=int, default=10_000)
    r.set_defaults(run=cmd_request)

    i = sub.add_parser("call-info")
    i.add_argument("id")
    i.set_defaults(run=cmd_call_info)

    y = sub.add_parser("reply")
    y.add_argument("id")
    y.add_argument("data")
    y.add_argument("--error-code")
    y.set_defaults(run=cmd_reply)

    s = sub.add_parser("serve")
    s.add_argument("--group", default=rc.DEFAULT_GROUP)
    s.add_argument("--consumer", default="py-responder")
    s.add_argument("--max-seconds", type=float, default=120, help="stop by itself after this long")
    s.set_defaults(run=cmd_serve)

    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
