"""trm-sre: turns Prometheus alerts into safe, automatic remediations."""

__version__ = "0.1.0"
