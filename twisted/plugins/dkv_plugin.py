from twisted.application.service import ServiceMaker

dkv = ServiceMaker("dkv", "dkv.tap", "A Raft-replicated key-value store", "dkv")
