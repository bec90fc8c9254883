from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="django-i3tasks",
    version="0.2.0.dev0",
    description="Background tasks for Django over Google Cloud Pub/Sub push.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    packages=find_packages(include=["django_i3tasks", "django_i3tasks.*"]),
    include_package_data=True,
    package_data={
        "django_i3tasks": ["testing/java/io/grpc/*.java", "static/django_i3tasks/*.css"],
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
        ],
    },
    classifiers=[
        "Framework :: Django",
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Programming Language :: Python :: 3",
    ],
)
