"""The registry's published contract: its HTTP client and the schemas it speaks.

The registry server answers with these schemas, and everything else that talks to the registry
(the operator, the local stack, the CLI) uses this client; none of them imports the server's code.
"""
