"""The MCP server: the mesh as tools for internal AI assistants."""
