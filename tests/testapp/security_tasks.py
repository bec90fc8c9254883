"""Tasks for the security tests (registered when tests.testapp.tasks is autodiscovered)."""
