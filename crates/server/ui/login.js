// The login page: a token in the link's fragment (`/ui/login#token=…&next=queue`, which never
// reaches the server's logs) is posted at once; otherwise the form waits for one.
(function () {
  const params = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  // The server says why by a code; the text is ours, never the link's.
  const why = {
    token: 'That token is unknown, revoked or expired.',
    role: 'That token has no dashboard (agent and metrics tokens do not).',
    origin: 'The login came from another site and was refused.',
    form: 'The login form was incomplete.',
    server: 'The server could not open a session; try again.',
  }[query.get('refused')];
  if (why) document.getElementById('problem').textContent = why;
  const next = params.get('next') || query.get('next') || '';
  document.getElementById('next').value = next;
  const token = params.get('token');
  if (token) {
    history.replaceState(null, '', location.pathname);
    const form = document.getElementById('login');
    form.elements.token.value = token;
    form.submit();
  }
})();
