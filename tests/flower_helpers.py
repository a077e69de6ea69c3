"""Shared by the Flower tests: TLS certificates for 127.0.0.1, a process census and a stand-in Grid."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from types import SimpleNamespace

FLOWER_PROGRAMS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp",
                   "flwr-simulation", "flwr run", "raylet", "gcs_server", "fedlada.federation.flower.worker",
                   "fedlada.federation.flower.supernode")


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a SuperLink certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedlada test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def flower_processes() -> dict[int, str]:
    """pid -> command line of every running Flower/Ray process on this machine."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and any(p in cmd for p in FLOWER_PROGRAMS):
            found[int(entry.name)] = cmd
    return found


def launched_under(pid: int, directory: Path) -> bool:
    """Whether process `pid` was started by a `fedlada flower` run whose files are under `directory`:
    every process such a run starts (and everything they start) has FLWR_HOME below its run directory.
    Lets a test count only its own processes while other Flower runs go on on the same machine."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(e.startswith(b"FLWR_HOME=" + str(directory).encode()) for e in env)


class StandInGrid:
    """A Flower Grid stand-in: records what is pushed and each call (`calls`: "push"/"pull"); answers each
    pushed message with `reply(msg)` (None: no reply yet), the latest message first, each reply tagged
    with the id of the message it answers (as Flower does)."""

    def __init__(self, reply):
        from fedlada.federation.flower.node import CONTROL_MESSAGES
        from fedlada.methods import register_protocol

        register_protocol("standalone", *CONTROL_MESSAGES)  # what the ServerApp does before it makes a channel
        self.reply, self.pushed, self.calls = reply, [], []

    def push_messages(self, msgs):
        self.calls.append("push")
        self.pushed += msgs
        return [str(i) for i in range(len(self.pushed) - len(msgs), len(self.pushed))]

    def pull_messages(self, ids):
        self.calls.append("pull")
        replies = []
        for message_id in sorted(ids, key=int, reverse=True):
            reply = self.reply(self.pushed[int(message_id)])
            if reply is not None:
                reply.metadata = SimpleNamespace(reply_to_message_id=message_id)
                replies.append(reply)
        return replies
