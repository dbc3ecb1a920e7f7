package main

import (
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/elasticsearch"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/engines/mongodb"
	"github.com/cnvrg/capsule/engines/mysql"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/engines/redis"
)

// registry lists the engines this binary runs: an explicit list, no
// self-registration.
func registry() *engines.Registry {
	return engines.NewRegistry(
		files.New(),
		postgres.New(),
		redis.New(),
		mysql.New(),
		elasticsearch.New(),
		mongodb.New(),
	)
}
