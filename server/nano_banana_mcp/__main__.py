from nano_banana_mcp.cli import main

main()
