"""Parses a Prometheus text exposition with prometheus_client's own parser.

Usage: prometheus_parse.py FILE
  Reads FILE (the body of GET /metrics), parses it with
  prometheus_client.parser.text_string_to_metric_families (a real Prometheus
  text parser, written by nobody here) and prints JSON:
  {"families": [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]}.
  A malformed exposition makes the parser raise: the exit status is then 1.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    families = []
    for family in text_string_to_metric_families(text):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {
                        "name": s.name,
                        "labels": s.labels,
                        # +Inf bucket bounds are labels; values are finite here, but keep
                        # JSON valid whatever comes
                        "value": s.value if math.isfinite(s.value) else str(s.value),
                    }
                    for s in family.samples
                ],
            }
        )
    json.dump({"families": families}, sys.stdout)


if __name__ == "__main__":
    main()
