from producers.cli import entry

entry()
