// Package scripts holds the shell scripts the Makefile calls. Its Go test
// runs install.sh into a scratch DESTDIR and checks the tree it makes.
package scripts
