import re
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="django-i3tasks",
    version=re.search(
        r'^__version__ = "([^"]+)"',
        Path(__file__).with_name("django_i3tasks").joinpath("__init__.py").read_text(),
        re.M,
    ).group(1),
    description="Background tasks for Django over Google Cloud Pub/Sub push.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    packages=find_packages(include=["django_i3tasks", "django_i3tasks.*"]),
    include_package_data=True,
    # Every non-Python file the package needs at run time; scripts/wheel_smoke.py fails when
    # a file tracked under django_i3tasks/ is missing from the wheel.
    package_data={
        "django_i3tasks": [
            "py.typed", "static/**/*", "templates/**/*", "testing/java-emulator-fix/**/*",
        ],
    },
    python_requires=">=3.10",
    # Every distribution the package imports, bounded: the lower bounds are installed and
    # tested by scripts/test.sh's "minimums" leg, the upper bounds are the next major versions
    # after the ones the other legs test.
    install_requires=[
        "django>=4.2,<7",
        "asgiref>=3.6,<4",
        "google-cloud-pubsub>=2.28,<3",
        "google-api-core>=2.11,<3",
        "google-auth>=2.14.1,<3",
        "grpcio>=1.51.3,<2",
        "protobuf>=4.21.6,<8",
        "croniter>=1.3,<8",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-django>=4.8",
            "hypothesis>=6.100",
            "psycopg[binary]>=3.1",
            "ruff>=0.6",
            "selenium>=4.20",  # the admin browser test (with Debian's chromium-driver)
            "import-linter>=2.1",
            "mypy>=1.10",
            "django-stubs>=5.0",
            # Django's tasks API before Django 6 (the backend's tests on 4.2/5.2). On Django 6
            # it is unused (django.tasks wins) and harmless: it needs only Django>=4.2,
            # typing_extensions and django-stubs-ext, which django-stubs brings anyway.
            "django-tasks>=0.10",
            # The wheel check: build it, check its metadata (scripts/wheel_smoke.py).
            "build>=1.0",
            "twine>=5.0",
            # the [metrics] and [otel] extras' tests (tasks-metrics/, spans over a real push)
            "prometheus-client>=0.17",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            "gunicorn>=22",  # the database-outage test serves the push view with it
        ],
        # tasks-metrics/: Prometheus counters, histograms and gauges.
        "metrics": ["prometheus-client>=0.17,<1"],
        # W3C trace context in messages and a span around each try.
        "otel": ["opentelemetry-api>=1.20,<2"],
        # bench/compare.py: the systems it compares with, the server, the chart.
        "bench": [
            "gunicorn>=22",
            "celery[redis]>=5.3,<6",
            "django-celery-results>=2.5",
            "matplotlib>=3.7",
            "psycopg[binary]>=3.1",
            # The durable peers: procrastinate and django-tasks' database backend.
            "procrastinate>=3.0",
            "django-tasks>=0.10",
            "django-tasks-db>=0.13",
        ],
    },
    classifiers=[
        "Framework :: Django",
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    ],
)
