package kubeletcfg

import (
	"fmt"
	"strconv"
	"strings"
)

// InputError is a problem with the kubelet's configuration as found on the node: a file that
// cannot be read or parsed, or a value the kubelet itself would refuse to start with. File is
// the node path (not the host-root path); Line is 1-based, 0 when unknown.
type InputError struct {
	File string
	Line int
	Msg  string
	// Err is the underlying error, if any, for errors.Is/As.
	Err error
}

func (e *InputError) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	if e.File == "" {
		return e.Msg
	}
	return e.File + ": " + e.Msg
}

func (e *InputError) Unwrap() error { return e.Err }

// inputErrorf builds an InputError at o (a file position or a flag's origin).
func inputErrorf(o origin, format string, args ...any) *InputError {
	return &InputError{File: o.file, Line: o.line, Msg: o.prefix() + fmt.Sprintf(format, args...)}
}

// origin is where one setting or one command-line word came from.
type origin struct {
	file string // node path, "/proc/1234/cmdline", "--kubelet-cmdline", "configz"
	line int    // 1-based, 0 when not line-oriented
	via  string // environment variable the word came through ("" when literal)
	flag string // "--eviction-hard" when the setting came from a kubelet flag
}

// pos is "FILE:LINE" (or "FILE").
func (o origin) pos() string {
	if o.line > 0 {
		return o.file + ":" + strconv.Itoa(o.line)
	}
	return o.file
}

// String is the provenance shown to users: "FILE:LINE",
// "flag --eviction-hard in FILE:LINE via $VAR".
func (o origin) String() string {
	var b strings.Builder
	if o.flag != "" {
		b.WriteString("flag " + o.flag + " in ")
	}
	b.WriteString(o.pos())
	if o.via != "" {
		b.WriteString(" via $" + o.via)
	}
	return b.String()
}

// prefix is prepended to error messages for settings that came from a flag, so a
// position in a unit file still says which flag was wrong.
func (o origin) prefix() string {
	if o.flag == "" {
		return ""
	}
	s := o.flag
	if o.via != "" {
		s += " (via $" + o.via + ")"
	}
	return s + ": "
}
