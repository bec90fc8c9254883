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
    package_data={
        "django_i3tasks": [
            "testing/java-emulator-fix/io/grpc/*.java", "static/django_i3tasks/*.css",
        ],
    },
    python_requires=">=3.10",
    install_requires=[
        "django>=4.2",
        "google-cloud-pubsub>=2.18",
        "croniter>=1.3",
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
            "gunicorn>=22",  # the database-outage test serves the push view with it
        ],
        # bench/compare.py: the systems it compares with, the server, the chart.
        "bench": [
            "gunicorn>=22",
            "celery[redis]>=5.3,<6",
            "django-celery-results>=2.5",
            "matplotlib>=3.7",
            "psycopg[binary]>=3.1",
        ],
    },
    classifiers=[
        "Framework :: Django",
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
    ],
)
