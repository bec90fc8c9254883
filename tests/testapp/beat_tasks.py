"""Tasks for the beat tests (registered when tests.testapp.tasks is autodiscovered)."""
