"""Tasks for the worker tests (registered when tests.testapp.tasks is autodiscovered)."""
