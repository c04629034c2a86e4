"""An SFTP server on paramiko for gzship's tests, started by crates/testkit/src/pysftpd.rs.

One user, who logs in with an authorized key or a password; files are served read-only by their
real paths. Its handles are paramiko's stock SFTPHandle, whose stat() answers FSTAT with
SSH_FX_OP_UNSUPPORTED, as some appliance servers do. With --stat no-mtime, no attributes carry
times (the SSH_FILEXFER_ATTR_ACMODTIME flag is never set); with --stat unsupported, STAT and LSTAT are
unsupported too.
"""

import argparse
import base64
import os
import socket
import sys
import threading

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface

STAT = "full"


def attrs(st, name=None):
    a = SFTPAttributes.from_stat(st, name)
    if STAT == "no-mtime":
        a.st_atime = None
        a.st_mtime = None
    return a


class Files(SFTPServerInterface):
    def stat(self, path):
        if STAT == "unsupported":
            return paramiko.SFTP_OP_UNSUPPORTED
        try:
            return attrs(os.stat(path))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def lstat(self, path):
        if STAT == "unsupported":
            return paramiko.SFTP_OP_UNSUPPORTED
        try:
            return attrs(os.lstat(path))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def canonicalize(self, path):
        return os.path.normpath(path if path.startswith("/") else "/" + path)

    def list_folder(self, path):
        try:
            return [attrs(os.lstat(os.path.join(path, n)), n) for n in os.listdir(path)]
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def open(self, path, flags, attr):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            f = open(path, "rb")
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        # paramiko's own handle: read() works, stat() (FSTAT) is unsupported.
        handle = SFTPHandle(flags)
        handle.filename = path
        handle.readfile = f
        return handle


class Login(paramiko.ServerInterface):
    def __init__(self, user, password, keys):
        self.user = user
        self.password = password
        self.keys = keys

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username):
        return "publickey,password"

    def check_auth_password(self, username, password):
        if username == self.user and password == self.password:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if username == self.user and key.asbytes() in self.keys:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED


def serve(conn, host_key, login):
    transport = paramiko.Transport(conn)
    transport.add_server_key(host_key)
    transport.set_subsystem_handler("sftp", SFTPServer, Files)
    try:
        transport.start_server(server=login)
    except (paramiko.SSHException, EOFError, OSError):
        # A readiness probe, or a client that gave up: nothing to serve.
        transport.close()
        return
    transport.join()


def main():
    global STAT
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host-key", required=True)
    p.add_argument("--authorized-keys", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--stat", choices=["full", "no-mtime", "unsupported"], default="full")
    args = p.parse_args()
    STAT = args.stat

    host_key = paramiko.Ed25519Key.from_private_key_file(args.host_key)
    with open(args.authorized_keys) as f:
        keys = {base64.b64decode(line.split()[1]) for line in f if line.strip()}
    login = Login(args.user, args.password, keys)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    print(f"pysftpd: paramiko {paramiko.__version__} on 127.0.0.1:{args.port}", file=sys.stderr)
    sys.stderr.flush()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, host_key, login), daemon=True).start()


if __name__ == "__main__":
    main()
