package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// newClient returns a small go-redis client for e. It speaks RESP2 and
// sends nothing on connect but AUTH and SELECT, so that a user with only
// read permissions can use it.
func (e *endpoint) newClient() *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Network:                  e.network,
		Addr:                     e.addr,
		Username:                 e.user,
		Password:                 e.password,
		TLSConfig:                e.tls,
		Protocol:                 2,
		DisableIdentity:          true,
		PoolSize:                 2,
		DialTimeout:              10 * time.Second,
		ReadTimeout:              2 * time.Minute,
		WriteTimeout:             2 * time.Minute,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// serverVersion asks HELLO (which every user may call) for the server's
// version.
func serverVersion(ctx context.Context, c interface {
	Do(context.Context, ...any) *goredis.Cmd
}) (string, error) {
	v, err := c.Do(ctx, "HELLO").Result()
	if err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	switch m := v.(type) {
	case []any:
		for i := 0; i+1 < len(m); i += 2 {
			if k, _ := m[i].(string); k == "version" {
				s, _ := m[i+1].(string)
				return s, nil
			}
		}
	case map[any]any:
		if s, ok := m["version"].(string); ok {
			return s, nil
		}
	}
	return "", errors.New("hello: no version in the reply")
}

// parseVersion splits "7.0.15" into 7 and 0.
func parseVersion(v string) (major, minor int) {
	parts := strings.SplitN(v, ".", 3)
	major, _ = strconv.Atoi(parts[0])
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	return major, minor
}

// rdbVersionOf maps a Redis server version to the RDB format version it
// writes (and the newest it reads). Servers newer than the table are
// assumed to read at least the newest version known here.
func rdbVersionOf(serverVersion string) int {
	major, minor := parseVersion(serverVersion)
	switch {
	case major > 7 || major == 7 && minor >= 4:
		return 12
	case major == 7 && minor >= 2:
		return 11
	case major == 7:
		return 10
	case major >= 5:
		return 9
	case major == 4:
		return 8
	case major == 3 && minor >= 2:
		return 7
	default:
		return 6
	}
}

// payloadRDBVersion returns the RDB version in a DUMP payload's trailer:
// two little-endian bytes before the 8-byte CRC64.
func payloadRDBVersion(p []byte) (int, error) {
	if len(p) < 10 {
		return 0, fmt.Errorf("dump payload of %d bytes is too short", len(p))
	}
	return int(binary.LittleEndian.Uint16(p[len(p)-10:])), nil
}

// databases returns the database numbers the server accepts, by
// selecting them in turn until it refuses (SELECT needs no permission
// beyond +select, unlike CONFIG GET databases).
func databases(ctx context.Context, conn *dbConn) ([]int, error) {
	dbs := []int{0}
	for n := 1; n < 100000; n++ {
		err := conn.sel(ctx, n)
		if isOutOfRange(err) {
			break
		}
		if isNoPerm(err) {
			return nil, errors.New("listing the databases (databases: all) needs the +select permission; or name the databases in the databases setting")
		}
		if err != nil {
			return nil, err
		}
		dbs = append(dbs, n)
	}
	return dbs, nil
}

// dbConn is one connection that knows its selected database, so that it
// sends SELECT only to change it (a read-only user may lack +select and
// still back up database 0).
type dbConn struct {
	*goredis.Conn
	cur int
}

func newDBConn(cl *goredis.Client) *dbConn { return &dbConn{Conn: cl.Conn()} }

func (c *dbConn) sel(ctx context.Context, db int) error {
	if db == c.cur {
		return nil
	}
	if err := c.Select(ctx, db).Err(); err != nil {
		return fmt.Errorf("select database %d: %w", db, err)
	}
	c.cur = db
	return nil
}

func isOutOfRange(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "out of range")
}

// isNoPerm tells an ACL refusal.
func isNoPerm(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOPERM")
}

// isUnknownCommand tells a command the server does not have.
func isUnknownCommand(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown command")
}
