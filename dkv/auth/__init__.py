# test-case-name: tests.auth.test_permissions,tests.auth.test_node_auth
"""etcd's authentication and authorization model on dkv.

- ``passwords``: salted scrypt hashes (never plaintext, never logged);
- ``permissions``: which keys a request touches, and whether a user's
  roles cover them (pure functions over etcd's ``authpb`` messages);
- ``store``: the replicated auth state in the state machine's tables
  (enabled flag, users, roles, the auth revision) and etcd's Auth writes,
  applied deterministically from the log;
- ``tokens``: etcd's ``simple`` tokens, issued through the log to every member;
- ``node_auth``: the node's side: credentials to an identity, the checks
  every API layer runs through ``dkv.node.Node``, the Auth RPCs.
"""
