"""Tasks for the chain tests (registered when tests.testapp.tasks is autodiscovered)."""
