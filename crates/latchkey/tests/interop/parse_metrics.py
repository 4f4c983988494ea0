"""Independent check of latchkey's /metrics: the official Prometheus Python client's text
parser (prometheus_client) reads the page. Prints, as JSON, every family's type and its samples
(name, labels, value), or exits non-zero with the parser's reason.

Usage: parse_metrics.py METRICS_URL
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    print(json.dumps({"content_type": content_type, "families": families}))


if __name__ == "__main__":
    main()
