#!/usr/bin/env python3
"""Checks a JUnit XML file with a standard XML parser (Python's ElementTree, strict about
well-formedness): it parses, its root is <testsuites> or <testsuite>, every suite's counts
match its test cases, and, unless --allow-failures, no case failed or erred.
Prints one JSON line of totals. Exit 0 ok, 1 the file fails the check."""
import json
import sys
import xml.etree.ElementTree as ET


def main(argv):
    allow = '--allow-failures' in argv
    files = [a for a in argv if not a.startswith('--')]
    if len(files) != 1:
        print('usage: check-junit.py <file.xml> [--allow-failures]', file=sys.stderr)
        return 2
    try:
        root = ET.parse(files[0]).getroot()
    except (ET.ParseError, OSError) as e:
        print(f'check-junit: {files[0]} does not parse: {e}', file=sys.stderr)
        return 1
    suites = [root] if root.tag == 'testsuite' else root.findall('testsuite') if root.tag == 'testsuites' else None
    if not suites:
        print(f'check-junit: {files[0]}: no <testsuite> (root is <{root.tag}>)', file=sys.stderr)
        return 1
    totals = {'tests': 0, 'failures': 0, 'errors': 0, 'skipped': 0}
    problems = []
    for s in suites:
        cases = s.findall('testcase')
        counted = {
            'tests': len(cases),
            'failures': sum(1 for c in cases if c.find('failure') is not None),
            'errors': sum(1 for c in cases if c.find('error') is not None),
            'skipped': sum(1 for c in cases if c.find('skipped') is not None),
        }
        for k, v in counted.items():
            if int(s.get(k, '0')) != v:
                problems.append(f'suite "{s.get("name")}" says {k}="{s.get(k)}" but has {v}')
            totals[k] += v
        for c in cases:
            for f in c.findall('failure') + c.findall('error'):
                if not allow:
                    problems.append(f'{c.get("classname")} {c.get("name")}: {f.get("message")}')
    print(json.dumps(totals))
    if totals['tests'] == 0:
        problems.append('no test cases')
    for p in problems:
        print(f'check-junit: {p}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
