"""What each command returns and writes, as typed records: evaluation.py (`cxr evaluate`),
explanation.py (`cxr explain`), audit.py (`cxr audit`); records.py turns them into JSON and back.
"""
