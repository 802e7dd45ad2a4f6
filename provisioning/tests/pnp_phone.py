"""A phone's side of SIP PnP, as a script run inside the phone's network namespace.

No real phone runs here, so this stands in for one: it multicasts the
SUBSCRIBE in the shape a vendor sends (Request-URI form, Event parameters,
any source port), answers the NOTIFY with 200 and prints what it got as JSON.
"""

import argparse
import json
import secrets
import socket
import struct
import time


def subscribe(args: argparse.Namespace, local_port: int) -> bytes:
    user = {"lower": "MAC%3a", "upper": "MAC%3A", "bare": "MAC"}[args.form] + args.mac
    branch = "z9hG4bK" + secrets.token_hex(6)
    event = f'ua-profile;profile-type="device";vendor="{args.vendor}";model="{args.model}";version="{args.version}"'
    lines = [
        f"SUBSCRIBE sip:{user}@224.0.1.75 SIP/2.0",
        f"Via: SIP/2.0/UDP {args.local}:{local_port};branch={branch};rport",
        f"From: <sip:{user}@224.0.1.75>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@224.0.1.75>",
        f"Call-ID: {secrets.token_hex(8)}@{args.local}",
        "CSeq: 1 SUBSCRIBE",
        f"Contact: <sip:{args.local}:{local_port}>",
        "Max-Forwards: 70",
        f"User-Agent: {args.vendor} {args.model} {args.version}",
        "Expires: 0",
        f"Event: {event}",
        "Accept: application/url",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("local", "mac", "vendor", "model", "version", "form"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.local, 0))  # any source port, as the issue asks
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.local))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
    sock.sendto(subscribe(args, sock.getsockname()[1]), ("224.0.1.75", 5060))
    result: dict[str, object] = {"status": None, "notify": None, "content_type": None, "notify_from": None}
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and result["notify"] is None:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, source = sock.recvfrom(65535)
        except TimeoutError:
            break
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        if lines[0].startswith("SIP/2.0 "):
            result["status"] = int(lines[0].split()[1])
        elif lines[0].startswith("NOTIFY "):
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
            }
            result.update(
                notify=body.decode(), content_type=headers.get("content-type"), notify_from=source[0]
            )
            echoed = [
                line
                for line in lines[1:]
                if line.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")
            ]
            ok = "\r\n".join(["SIP/2.0 200 OK", *echoed, "Content-Length: 0"]) + "\r\n\r\n"
            sock.sendto(ok.encode(), source)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
