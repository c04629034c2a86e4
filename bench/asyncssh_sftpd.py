"""An asyncssh SFTP server for bench/sftp_read.sh --server asyncssh: one user (any name) who logs
in with the authorized key, files served by their real paths, asyncssh's defaults otherwise. Its
limits@openssh.com advertises READs of up to 4 MiB (asyncssh's MAX_SFTP_READ_LEN)."""

import argparse
import asyncio
import sys

import asyncssh


async def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host-key", required=True)
    p.add_argument("--authorized-keys", required=True)
    args = p.parse_args()
    await asyncssh.listen(
        "127.0.0.1",
        args.port,
        server_host_keys=[args.host_key],
        authorized_client_keys=args.authorized_keys,
        sftp_factory=True,
        allow_scp=False,
    )
    print(f"asyncssh {asyncssh.__version__} on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
