package redisbus_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A log at error level says what went wrong as its error: with a nil one,
// Watermill's loggers print err=<nil> beside a message about a loss. This
// reads the library's sources for logger.Error calls given a literal nil.
func TestErrorLogsCarryAnError(t *testing.T) {
	fset := token.NewFileSet()
	var checked int
	for _, dir := range []string{".", "wsroute", "pubsubtest"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			src, err := os.ReadFile(path)
			require.NoError(t, err)
			file, err := parser.ParseFile(fset, path, src, 0)
			require.NoError(t, err)
			ast.Inspect(file, func(node ast.Node) bool {
				call, ok := node.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Error" || !strings.Contains(strings.ToLower(exprString(sel.X)), "logger") {
					return true
				}
				checked++
				if arg, ok := call.Args[1].(*ast.Ident); ok && arg.Name == "nil" {
					t.Errorf("%s: an error log without an error", fset.Position(call.Pos()))
				}
				return true
			})
		}
	}
	assert.Greater(t, checked, 10, "the scan found the library's error logs")
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return ""
}
