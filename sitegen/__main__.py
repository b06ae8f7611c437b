from sitegen.cli import app

app()
