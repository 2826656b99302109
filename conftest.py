pytest_plugins = ["fte_stack.pytest_plugin"]
