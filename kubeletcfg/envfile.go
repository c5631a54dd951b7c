package kubeletcfg

import (
	"strings"
)

// envVar is one environment variable of the kubelet's unit with where it was defined.
type envVar struct {
	val string
	o   origin
}

// parseEnvFile reads an EnvironmentFile= the way systemd does (load_env_file in
// systemd src/basic/env-file.c): KEY=VALUE lines, "#" and ";" comments, single quotes
// literal, double quotes with backslash escapes, unquoted values with leading and trailing
// whitespace dropped and backslash escaping the next character, backslash-newline joining
// lines. An optional "export " prefix is accepted as systemd ≥ 251 does. Each variable
// remembers the line its key is on.
func parseEnvFile(data, file string) ([]envKV, error) {
	var out []envKV
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimLeft(lines[i], " \t\r")
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, rest, ok := strings.Cut(line, "=")
		if !ok {
			// systemd ignores lines without "=" (with a log message); so do we.
			continue
		}
		key = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(key), "export "))
		var val strings.Builder
		var quote byte
		trailingWS := 0 // unquoted whitespace at the end, dropped
		rest = strings.TrimLeft(rest, " \t")
		for {
			done := true
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				switch {
				case quote == '\'':
					if c == '\'' {
						quote = 0
					} else {
						val.WriteByte(c)
					}
					trailingWS = 0
				case quote == '"':
					switch {
					case c == '"':
						quote = 0
					case c == '\\' && j+1 < len(rest) && strings.IndexByte("\"\\`$", rest[j+1]) >= 0:
						j++
						val.WriteByte(rest[j])
					case c == '\\' && j+1 == len(rest):
						// line continuation inside double quotes
					default:
						val.WriteByte(c)
					}
					trailingWS = 0
				case c == '\'' || c == '"':
					quote = c
					trailingWS = 0
				case c == '\\':
					if j+1 < len(rest) {
						j++
						val.WriteByte(rest[j])
						trailingWS = 0
					}
				case c == ' ' || c == '\t' || c == '\r':
					val.WriteByte(c)
					trailingWS++
				default:
					val.WriteByte(c)
					trailingWS = 0
				}
			}
			continued := strings.HasSuffix(rest, "\\") && !strings.HasSuffix(rest, "\\\\")
			if (quote != 0 || continued) && i+1 < len(lines) {
				if quote != 0 && !continued {
					val.WriteByte('\n')
				}
				i++
				rest = lines[i]
				done = false
			}
			if done {
				break
			}
		}
		if quote != 0 {
			return nil, inputErrorf(origin{file: file, line: start}, "unterminated %c quote in value of %s", quote, key)
		}
		s := val.String()
		s = s[:len(s)-trailingWS]
		out = append(out, envKV{key: key, v: envVar{val: s, o: origin{file: file, line: start}}})
	}
	return out, nil
}

type envKV struct {
	key string
	v   envVar
}
