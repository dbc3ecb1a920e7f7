package mysql

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var testModes = lexModes{version: 101119, mariadb: true}

// split reads every statement of script, through r (the script itself
// when nil).
func split(t testing.TB, script string, m lexModes, r io.Reader) ([]string, *dumpReader, error) {
	if r == nil {
		r = strings.NewReader(script)
	}
	d := newDumpReader(r, 1<<20)
	d.modes = m
	var out []string
	for {
		s, _, err := d.next()
		if errors.Is(err, io.EOF) {
			return out, d, nil
		}
		if err != nil {
			return out, d, err
		}
		out = append(out, strings.TrimSpace(string(s)))
	}
}

const splitScript = `/*M!999999\- enable the sandbox mode */
-- MariaDB dump; with a semicolon
/*!40101 SET NAMES utf8mb4 */;
# a hash comment; too
USE ` + "`a;b`" + `;
INSERT INTO t VALUES ('x;y', 'it\'s; \\', "dq;\"", 'two''; quotes'),(0x00FF,'--not a comment;');
SELECT 1--1;
/* block; comment */ SELECT 2 /* inner; */;
DELIMITER ;;
CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW BEGIN INSERT INTO u VALUES (1); INSERT INTO u VALUES (2); END ;;
/*!50003 CREATE*/ /*!50017 DEFINER=` + "`u`@`%`" + `*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET NEW.a = ';' */;;
delimiter ;
;
SELECT ` + "`odd``;name`" + ` FROM t;
-- Dump completed on 2024-01-01
`

var splitWant = []string{
	"/*M!999999\\- enable the sandbox mode */\n-- MariaDB dump; with a semicolon\n/*!40101 SET NAMES utf8mb4 */",
	"# a hash comment; too\nUSE `a;b`",
	`INSERT INTO t VALUES ('x;y', 'it\'s; \\', "dq;\"", 'two''; quotes'),(0x00FF,'--not a comment;')`,
	"SELECT 1--1",
	"/* block; comment */ SELECT 2 /* inner; */",
	"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW BEGIN INSERT INTO u VALUES (1); INSERT INTO u VALUES (2); END",
	"/*!50003 CREATE*/ /*!50017 DEFINER=`u`@`%`*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET NEW.a = ';' */",
	"SELECT `odd``;name` FROM t",
}

func TestDumpReaderSplitsLikeTheClient(t *testing.T) {
	for name, r := range map[string]io.Reader{
		"whole":        nil,
		"byte by byte": iotest.OneByteReader(strings.NewReader(splitScript)),
		"half":         iotest.HalfReader(strings.NewReader(splitScript)),
	} {
		got, d, err := split(t, splitScript, testModes, r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Join(got, "\n⁂\n") != strings.Join(splitWant, "\n⁂\n") {
			t.Errorf("%s: statements\n%q\nwant\n%q", name, got, splitWant)
		}
		if !d.sawEnd {
			t.Errorf("%s: the completion line was not seen", name)
		}
	}
}

func TestDumpReaderModes(t *testing.T) {
	script := `SELECT 'a\'; SELECT "b\"; SELECT 3;`
	got, _, err := split(t, script, lexModes{noBackslashEscapes: true}, nil)
	if err != nil || len(got) != 3 {
		t.Errorf("NO_BACKSLASH_ESCAPES: %q, %v; want three statements", got, err)
	}
	if _, _, err := split(t, script, lexModes{}, nil); !errors.Is(err, errTruncated) {
		t.Errorf("with backslash escapes the script ends inside a string: err = %v", err)
	}
	// A comment the server skips (a version above its own) is not read
	// as SQL; one it runs is.
	toks := lex([]byte("/*!99999 GRANT */ /*!50000 SET */ x"), lexModes{version: 80036}, nil)
	if len(toks) != 2 || string("/*!99999 GRANT */ /*!50000 SET */ x"[toks[0].start:toks[0].end]) != "SET" {
		t.Errorf("tokens %v", toks)
	}
	// MySQL does not run /*M! comments; MariaDB does.
	if toks := lex([]byte("/*M!100000 GRANT */"), lexModes{version: 80036}, nil); len(toks) != 0 {
		t.Errorf("MySQL: tokens %v", toks)
	}
	if toks := lex([]byte("/*M!100000 GRANT */"), testModes, nil); len(toks) != 1 {
		t.Errorf("MariaDB: tokens %v", toks)
	}
}

func TestDumpReaderRefusesTruncation(t *testing.T) {
	for _, s := range []string{"INSERT INTO t VALUES ('abc", "SELECT /* open", "SELECT `x", "/*!40101 SET x = 1"} {
		if _, _, err := split(t, s, testModes, nil); !errors.Is(err, errTruncated) {
			t.Errorf("%q: err = %v, want errTruncated", s, err)
		}
	}
	d := newDumpReader(strings.NewReader("INSERT INTO t VALUES ('"+strings.Repeat("x", 5000)+"');"), 1000)
	if _, _, err := d.next(); err == nil || !strings.Contains(err.Error(), "max_allowed_packet") {
		t.Errorf("a statement over the limit: err = %v", err)
	}
}

// FuzzDumpReader: reading a byte at a time splits exactly as reading
// the whole, and nothing panics.
func FuzzDumpReader(f *testing.F) {
	f.Add(splitScript)
	f.Add("DELIMITER $$\nSELECT '$$' $$\nDELIMITER ;\n")
	f.Fuzz(func(t *testing.T, script string) {
		a, _, errA := split(t, script, testModes, nil)
		b, _, errB := split(t, script, testModes, iotest.OneByteReader(strings.NewReader(script)))
		if (errA == nil) != (errB == nil) || strings.Join(a, "\x00") != strings.Join(b, "\x00") {
			t.Fatalf("whole: %q, %v; byte by byte: %q, %v", a, errA, b, errB)
		}
		for _, s := range a {
			lex([]byte(s), testModes, nil)
		}
	})
}

func testChecker() *checker {
	a := &plan{from: "app", to: "app", side: "app_capsule_restore_x"}
	b := &plan{from: "logs", to: "logs", side: "logs_capsule_restore_x"}
	m := testModes
	return &checker{
		plans:     []*plan{a, b},
		byFrom:    map[string]*plan{"app": a, "logs": b},
		cur:       a,
		schemas:   map[string]string{"app": "app", "logs": "logs", "victim": "victim", "mysql": "mysql", "app_capsule_restore_x": "app_capsule_restore_x"},
		restoring: "capsule@%",
		definers:  []string{"app@%"},
		modes:     &m,
	}
}

func TestCheckerAcceptsWhatDumpsHold(t *testing.T) {
	for _, tc := range []struct{ in, run string }{
		{"USE `logs`", "USE `logs_capsule_restore_x`"},
		{"USE app", "USE `app_capsule_restore_x`"},
		{"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */", ""},
		{"DROP TABLE IF EXISTS `t`", ""},
		{"CREATE TABLE `t` (`id` int NOT NULL, KEY `k` (`id`), CONSTRAINT `f` FOREIGN KEY (`id`) REFERENCES `u` (`id`)) ENGINE=InnoDB", ""},
		{"INSERT INTO `t` VALUES (1,'victim.secrets'),(2,'x')", ""},
		{"LOCK TABLES `t` WRITE", ""},
		{"/*!40000 ALTER TABLE `t` DISABLE KEYS */", ""},
		{"UNLOCK TABLES", ""},
		{"/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`capsule`@`%` SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */",
			"/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */"},
		{"CREATE DEFINER=`app`@`%` PROCEDURE `p`() BEGIN SELECT COUNT(*) FROM information_schema.tables; INSERT INTO logs.events VALUES (NEW.x); END",
			"CREATE DEFINER=CURRENT_USER PROCEDURE `p`() BEGIN SELECT COUNT(*) FROM information_schema.tables; INSERT INTO logs.events VALUES (NEW.x); END"},
		{"ALTER DATABASE `app` CHARACTER SET latin1 COLLATE latin1_swedish_ci", "ALTER DATABASE `app_capsule_restore_x` CHARACTER SET latin1 COLLATE latin1_swedish_ci"},
		{"DROP SEQUENCE IF EXISTS `s`", ""},
		{"CREATE SEQUENCE `s` start with 1 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB", ""},
		{"DO SETVAL(`s`, 1001, 0)", ""},
		{"SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ 'abc:1-5'", "-"},
		{"SET @@SESSION.SQL_LOG_BIN= 0", "-"},
		{"-- only a comment", "-"},
	} {
		c := testChecker()
		out, err := c.check([]byte(tc.in), 1)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		want := tc.run
		switch want {
		case "":
			want = tc.in
		case "-":
			want = ""
		}
		if out.run != want {
			t.Errorf("%s: runs %q, want %q", tc.in, out.run, want)
		}
	}
	c := testChecker()
	if _, err := c.check([]byte("CREATE DEFINER=`app`@`%` TRIGGER `tr` BEFORE INSERT ON `t` FOR EACH ROW SET NEW.a = 1"), 1); err != nil {
		t.Fatal(err)
	}
	if got := c.cur.definers["TRIGGER tr"]; got != "app@%" {
		t.Errorf("recorded definer %q, want app@%%", got)
	}
}

func TestCheckerRefuses(t *testing.T) {
	for _, tc := range []struct{ in, reason string }{
		{`\! id`, "client command"},
		{`SELECT 1 \g`, "client command"},
		{"system id", "command of the mysql client"},
		{"connect victim", "command of the mysql client"},
		{"USE victim", "does not list"},
		{"USE `app`, x", "not a USE of one database"},
		{"INSERT INTO victim.t VALUES (1)", "names database victim"},
		{"INSERT INTO `VICTIM` . `t` VALUES (1)", "names database VICTIM"},
		{"INSERT INTO t SELECT * FROM mysql.user", "names database mysql"},
		{"INSERT INTO t SELECT a FROM elsewhere.t.a", "names database elsewhere"},
		{"INSERT INTO logs.t VALUES (1)", "names database logs"}, // outside a stored program: only its own database
		{"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW DELETE FROM victim.t", "names database victim"},
		{"CREATE TABLE t (id int) ENGINE = CONNECT", "CONNECT engine"},
		{"CREATE TABLE t (id int) CONNECTION 'mysql://x'", "another server"},
		{"CREATE TABLE t (id int) DATA DIRECTORY = '/tmp'", "DIRECTORY"},
		{"CREATE TABLE app.t (id int)", "names database app"},
		{"CREATE PROCEDURE logs.p() SELECT 1", "creates a procedure in database logs"},
		{"CREATE FUNCTION f RETURNS STRING SONAME 'evil.so'", "loads code"},
		{"CREATE OR REPLACE USER x", "manages accounts"},
		{"CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'x')", "link to another server"},
		{"DROP DATABASE app", "creates or drops a database"},
		{"DROP USER x", "manages accounts"},
		{"ALTER DATABASE victim CHARACTER SET latin1", "alters database victim"},
		{"ALTER DATABASE app UPGRADE DATA DIRECTORY NAME", "DIRECTORY"},
		{"ALTER USER CURRENT_USER IDENTIFIED BY 'x'", "manages accounts"},
		{"SET STATEMENT max_statement_time=1 FOR DELETE FROM t", "SET STATEMENT"},
		{"SET PERSIST x = 1", "global setting"},
		{"SET DEFAULT ROLE r", "SET DEFAULT"},
		{"UPDATE t SET a = 1", "holds no UPDATE"},
		{"CALL p()", "holds no CALL"},
		{"SELECT * FROM t", "only to set a sequence"},
		{"DO SLEEP(100)", "only to set a sequence"},
		{"HANDLER t OPEN", "holds no HANDLER"},
		{"CREATE DEFINER=`root`@`localhost` FUNCTION f() RETURNS INT RETURN 1", "would run as root@localhost"},
		{"CREATE DEFINER=app@`%` PROCEDURE p() BEGIN ALTER DEFINER=root@localhost VIEW v AS SELECT 1; END", "definer twice"},
		{"CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN PREPARE s FROM @q; EXECUTE s; END", "dynamic SQL"},
		{"SELECT * FROM t INTO DUMPFILE '/tmp/x'", "writes a file"},
		{"INSERT INTO t VALUES (LOAD_FILE('/etc/passwd'))", "reads a file"},
		{"FLUSH PRIVILEGES", "acts on the server"},
		{"'quoted' first", "does not begin with an SQL statement"},
	} {
		c := testChecker()
		_, err := c.check([]byte(tc.in), 7)
		var re *refusedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.reason) || re.Line != 7 {
			t.Errorf("%s: err = %v, want a refusal at line 7 naming %q", tc.in, err, tc.reason)
		}
	}
	// Before the dump's first USE, only settings.
	c := testChecker()
	c.cur = nil
	if _, err := c.check([]byte("CREATE TABLE t (id int)"), 1); err == nil || !strings.Contains(err.Error(), "first USE") {
		t.Errorf("a CREATE before any USE: %v", err)
	}
	// ANSI_QUOTES makes "victim" a name.
	c = testChecker()
	c.modes.ansiQuotes = true
	if _, err := c.check([]byte(`INSERT INTO "victim"."t" VALUES (1)`), 1); err == nil || !strings.Contains(err.Error(), "names database victim") {
		t.Errorf("ANSI_QUOTES: %v", err)
	}
}

func TestVersionNumber(t *testing.T) {
	for in, want := range map[string]int{"10.11.19-MariaDB-0+deb12u1": 101119, "8.0.36": 80036, "5.7.44-log": 50744, "11.4.2-MariaDB": 110402} {
		if got := versionNumber(in); got != want {
			t.Errorf("versionNumber(%q) = %d, want %d", in, got, want)
		}
	}
}
