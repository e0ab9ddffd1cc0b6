# Runs under Python 2.7, in the environment of autobahntestsuite (see requirements-py27.txt).
"""Autobahn|Testsuite's ``wstest -m fuzzingserver``, with the messages of cases 9.1-9.6 made smaller.

Usage: python fuzzingserver.py SCALE wstest-arguments...

SCALE (a number, 1 for the cases as published) multiplies the payload length of
cases 9.1-9.6 (64 KiB to 16 MiB messages), so that a CI run takes seconds rather
than minutes; every other case runs unchanged.
"""

import sys

from autobahntestsuite import wstest
from autobahntestsuite.case import Cases


def scaled(init, scale):
    def init_scaled(self):
        init(self)
        length = getattr(self, "DATALEN", None)
        if length is None:
            return
        self.DATALEN = max(1, int(length * scale))
        # Cases 9.3 and 9.4 send PAYLOAD whole, in frames of FRAGSIZE; the others repeat it up to DATALEN.
        if len(self.PAYLOAD) == length:
            self.PAYLOAD = self.PAYLOAD[: self.DATALEN]
        if getattr(self, "FRAGSIZE", 0) > self.DATALEN:
            self.FRAGSIZE = self.DATALEN

    return init_scaled


def main():
    scale = float(sys.argv[1])
    if scale != 1:
        for case in Cases:
            # Only an init of the class's own, so that a subclass's is not scaled twice.
            init = case.__dict__.get("init")
            if init is not None and case.__name__[:7] in (
                "Case9_1",
                "Case9_2",
                "Case9_3",
                "Case9_4",
                "Case9_5",
                "Case9_6",
            ):
                case.init = scaled(init, scale)
    sys.argv[1:2] = []
    wstest.run()


if __name__ == "__main__":
    main()
