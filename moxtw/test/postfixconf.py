"""Throwaway Postfix instances for interop tests and benchmarks: master.cf from the
package's template. Standard library only, so ``bench/smtp.py`` (run with the system
Python) can use it too."""


def master_cf(source, port):
    """The entries of the package's master.cf at ``source`` with smtpd listening on
    127.0.0.1:``port`` (other inet services dropped), no chroot (the temporary queue
    directory has no etc/ copies) and no pipe services."""
    entries = []
    with open(source) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            if line[0].isspace():
                if entries:
                    entries[-1].append(line.rstrip("\n"))
                continue
            entries.append([line.split()])
    out = []
    done = False
    for entry in entries:
        fields = entry[0]
        if len(fields) < 8 or fields[7] == "pipe":
            continue
        if fields[1] == "inet":
            if fields[0] != "smtp" or done:
                continue
            fields[0] = f"127.0.0.1:{port}"
            done = True
        fields[4] = "n"
        out.append(" ".join(fields))
        out.extend(entry[1:])
    if not done:
        out.insert(0, f"127.0.0.1:{port} inet n - n - - smtpd")
    return "\n".join(out) + "\n"
