"""A server that speaks just enough RESP to pass for the mesh's Redis to a client that
only checks what the server says: it says OK to any AUTH and, asked for its requirepass,
answers the password the client has just sent it. Every command it gets goes to argv[2].

usage: resp_impostor.py SOCKET LOG    (binds SOCKET.new, then renames it onto SOCKET)
"""

import os
import socket
import sys


def read_command(f):
    line = f.readline()
    if not line.startswith(b"*"):
        return None
    words = []
    for _ in range(int(line[1:])):
        size = int(f.readline()[1:])
        words.append(f.read(size + 2)[:-2].decode())
    return words


def bulk(text):
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def serve(conn, log):
    f = conn.makefile("rb")
    password = ""
    while (words := read_command(f)) is not None:
        log.write(" ".join(words) + "\n")
        log.flush()
        name = words[0].upper()
        if name == "AUTH":
            password = words[-1]
        if name == "CONFIG":
            conn.sendall(b"*2\r\n" + bulk("requirepass") + bulk(password))
        elif name == "INFO":
            conn.sendall(bulk("redis_version:7.2.0\r\n"))
        else:
            conn.sendall(b"+OK\r\n")


def main():
    path, log = sys.argv[1], open(sys.argv[2], "a")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".new")
    listener.listen(8)
    os.rename(path + ".new", path)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            serve(conn, log)
        except (OSError, ValueError):
            pass
        conn.close()


main()
