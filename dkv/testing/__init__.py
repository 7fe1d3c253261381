"""Tools for testing dkv from the outside: real-process clusters, fault-injecting
proxies, client histories and a linearizability checker."""
