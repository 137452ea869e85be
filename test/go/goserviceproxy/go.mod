module local.test/goserviceproxy

go 1.24
